/**
 * The failure modes real sync servers shipped (design.md, "Sync: lessons the anchors paid for"), one named test
 * each, against the real engine over a real store (tests/helpers/syncWorld.ts: window 5 / +5 / max 10) — on each
 * backend, SQLite and PostgreSQL, every test a fresh user in one store per describe block — and, for the error codes,
 * over HTTP (the SQLite app). Every test asserts the exact thing its failure would break; the comment above each
 * says which change to the engine would make it fail.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import request from 'supertest';
import { Client } from 'pg';
import { SyncWorld, Replica, SMALL_WINDOW, TRIM_AFTER_MS, WorldStore } from '../helpers/syncWorld';
import { STORE_BACKENDS, type StoreBackend } from '../helpers/storeBackends';
import { freshDatabase } from '../helpers/postgres';
import type { WindowSizes } from '../../server/sync/itemSync';
import { buildTestApp, signIn, tempDir, type TestContext } from '../helpers/testApp';
import { ApiError } from '../../server/errors';
import { openDatabase } from '../../server/store/sqlite/db';
import { createTokenCodec, type ItemToken } from '../../server/sync/tokens';
import type { ItemSyncPage } from '../../server/sync/itemSync';
import type { FolderSyncPage } from '../../server/sync/folderSync';
import { folderView } from '../../server/views';
import type { DeviceRecord, Folder } from '../../server/store/types';

const DAY = 86_400_000;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

type WithWorld = <T>(fn: (w: SyncWorld) => Promise<T>, window?: WindowSizes) => Promise<T>;

/**
 * For one describe block on one backend: a store opened before its tests (one file, one database), and `withWorld`,
 * which runs a test in a fresh user's mailbox in it.
 */
function worldsOn(backend: StoreBackend): WithWorld {
  let stores: WorldStore | undefined;
  beforeAll(async () => {
    stores = await WorldStore.open(backend);
  });
  afterAll(() => stores?.close());
  return async (fn, window = SMALL_WINDOW) => {
    const w = await SyncWorld.open({ on: stores!, window });
    try {
      return await fn(w);
    } finally {
      await w.close();
    }
  };
}

/** Delivers `n` messages, one second apart from `start` on; returns their ids oldest first. */
async function fill(w: SyncWorld, folderId: string, n: number, start: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await w.deliver(folderId, start + i * 1000)).id);
  return ids;
}

const byId = ([a]: [string, unknown], [b]: [string, unknown]) => (a < b ? -1 : a > b ? 1 : 0);
const sorted = (m: Map<string, unknown>) => [...m.entries()].sort(byId);

/** The replica holds exactly the folder's window of `size`: the same ids and the same field values. */
async function expectHolds(w: SyncWorld, r: Replica, size: number) {
  expect(sorted(r.items)).toEqual(sorted(await w.expectedWindow(r.folderId, size)));
}

/** The ApiError a sync call rejects with (fails the test when it answers a page instead). */
async function refused(fn: () => Promise<unknown>): Promise<ApiError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected the sync to be refused, but it answered a page');
}

/** Reads a token's position: the payload is plain base64url JSON (tests may look inside; apps may not). */
function position(token: string): Pick<ItemToken, 'm' | 'l' | 'z'> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8'));
}

const entries = (p: ItemSyncPage) => p.created.length + p.updated.length + p.removed.length;

/** Hierarchy sync to the end, applying pages to `held`; returns every page. */
async function syncHierarchy(w: SyncWorld, device: DeviceRecord, held: Map<string, unknown>, token: string | undefined, maxChanges: number) {
  const pages: FolderSyncPage[] = [];
  for (let guard = 0; ; guard++) {
    if (guard > 1000) throw new Error('hierarchy sync did not terminate');
    const page = await w.syncFolders({ userId: w.user.id, device: (await w.store.devices.byId(device.id))!, token, maxChanges });
    expect(page.created.length + page.updated.length + page.deleted.length).toBeLessThanOrEqual(maxChanges);
    if (page.moreAvailable) expect(page.token).not.toBe(token);
    for (const id of page.deleted) held.delete(id);
    for (const f of [...page.created, ...page.updated]) held.set(f.id, f);
    pages.push(page);
    token = page.token;
    if (!page.moreAvailable) return { token, pages };
  }
}

const currentFolders = async (w: SyncWorld) => new Map((await w.store.folders.listByUser(w.user.id)).map((f: Folder) => [f.id, folderView(f)]));

// ---------------------------------------------------------------------------------------------------------------

describe.each(STORE_BACKENDS)('%s: retrying a token after a lost response', (backend) => {
  const withWorld = worldsOn(backend);
  // Breaks if a token named server-side state that a page moves on (Z-Push-contrib #296: the response's token was
  // never stored, or the stored cursor advanced although the client never saw the page): the retry would then
  // answer a different page, or skip the lost one.
  test('the same token answers the same page, mid initial sync and incrementally, and the replica converges', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const ids = await fill(w, inbox.id, 12, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());

      await a.step({ maxChanges: 2 });
      const mid = a.token;
      const lost = await a.step({ maxChanges: 2, lose: true });
      expect(a.token).toBe(mid);
      const retried = await a.step({ maxChanges: 2 });
      expect(retried).toEqual(lost); // same token, same entries, same order
      await a.syncToEnd(2);
      await expectHolds(w, a, 5);

      // Incrementally: a flag, a new message (evicting the oldest held one) and a delete inside the window.
      await w.mail.update(w.user.id, ids[11]!, { isFlagged: true });
      await w.deliver(inbox.id, w.clock.now() + 100_000);
      await w.mail.delete(w.user.id, ids[10]!, true);
      const before = a.token;
      const lost2 = await a.step({ lose: true });
      expect(entries(lost2)).toBeGreaterThan(0);
      expect(a.token).toBe(before);
      expect(await a.step()).toEqual(lost2);
      await expectHolds(w, a, 5);

      // A lost response, then more changes before the retry: the retry answers both.
      await w.mail.update(w.user.id, ids[9]!, { isRead: true });
      await a.step({ lose: true });
      await w.deliver(inbox.id, w.clock.now() + 200_000);
      await w.mail.update(w.user.id, ids[11]!, { isFlagged: false });
      await a.syncToEnd(1);
      await expectHolds(w, a, 5);
    }));

  // An app that applied newer pages but persisted only an older token presents that older token again. The retry
  // re-sends what the newer pages carried (created is an upsert, updated a merge) and converges.
  test('an older token presented after newer pages were applied converges (nothing moved below its window)', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const ids = await fill(w, inbox.id, 12, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());

      // Mid initial sync: keep page 1's token, apply the rest, then go back to it with nothing changed.
      await a.step({ maxChanges: 2 });
      const t1 = a.token;
      await a.syncToEnd(2);
      a.token = t1;
      await a.syncToEnd(2);
      await expectHolds(w, a, 5);

      // From a final token: newer incremental pages applied, then the older token again after more changes.
      const t2 = a.token;
      await w.mail.update(w.user.id, ids[11]!, { isFlagged: true });
      await w.deliver(inbox.id, w.clock.now() + 100_000); // evicts the oldest held item
      await a.syncToEnd(1);
      await w.mail.update(w.user.id, ids[10]!, { categories: ['red'] });
      await w.deliver(inbox.id, w.clock.now() + 200_000);
      await w.mail.delete(w.user.id, ids[11]!, true);
      a.token = t2;
      await a.syncToEnd(1);
      await expectHolds(w, a, 5);
    }));

  // KNOWN GAP (reported): a token describes the held set, so the server cannot know about items that newer pages
  // pulled in *below* the older token's lower bound. When such an item later leaves the window (here: two new
  // messages push it out), a sync from the older token never names it and the app keeps a ghost. protocol.md §5 says
  // "presenting the same token again is always safe"; that holds for a lost response (nothing applied), not for an
  // app that applied a page but kept the previous token. Either the protocol must require apps to persist a page's
  // entries and its token atomically, or this must 410 / be repaired server-side. Remove `.failing` once decided.
  test.failing('an older token presented after newer pages pulled items in below its lower bound, which then left the window', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      await fill(w, inbox.id, 5, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());
      await a.step({ maxChanges: 2 }); // the 2 newest; t1's lower bound is the 2nd newest
      const t1 = a.token;
      await a.syncToEnd(2); // the 3 older ones arrive: the app holds all 5 but persisted only t1
      await w.deliver(inbox.id, w.clock.now() + 100_000);
      await w.deliver(inbox.id, w.clock.now() + 200_000); // the two oldest are now outside the window
      a.token = t1;
      await a.syncToEnd(2);
      await expectHolds(w, a, 5); // fails: the app still holds the two oldest (never evicted)
    }));
});

describe.each(STORE_BACKENDS)('%s: pages of size 1 over a batch of changes made in one transaction', (backend) => {
  const withWorld = worldsOn(backend);
  // The cyrus-imapd bug (PR #6220): changes that share one sequence number break paging, because a page that ends
  // inside a run of equal numbers resumes *after* the number and skips the rest. Here one transaction makes 30-odd
  // changes; with maxChanges=1 every one must arrive exactly once. Were the store to stamp one modseq per
  // transaction (or the engine resume at `modseq > cursor` mid-run), whole groups would be skipped and the
  // "exactly once" and convergence assertions below fail.
  test('every change arrives exactly once, each page holds one entry, and the token strictly advances', () =>
    withWorld(
      async (w) => {
        const inbox = await w.folder('inbox');
        const archive = await w.folder('archive');
        const start = w.clock.now();
        const held = await fill(w, inbox.id, 10, start);
        const a = new Replica(w, inbox.id, await w.device());
        await a.syncToEnd();
        expect(a.items.size).toBe(10);

        const newItems = Array.from({ length: 20 }, (_, i) => w.newItem(inbox.id, start + 100_000 + i * 1000));
        const now = w.clock.now();
        const fresh = await w.store.run(function* (tx) {
          const made: string[] = [];
          for (const [i, item] of newItems.entries()) {
            made.push((yield* tx.items.create(item, now)).id);
            // Created, then changed at once (the non-adjacent case is the KNOWN BUG test below).
            if (i < 4) yield* tx.items.update(w.user.id, made[i]!, { isFlagged: true }, now);
          }
          for (const id of held.slice(0, 5)) yield* tx.items.update(w.user.id, id, { isFlagged: true }, now);
          for (const id of held.slice(3, 6)) yield* tx.items.update(w.user.id, id, { isRead: true }, now); // two of them twice
          yield* tx.items.delete(w.user.id, held[8]!, now);
          yield* tx.items.move(w.user.id, held[9]!, archive.id, now);
          return made;
        });
        const stamps = await w.host.peek.changeStamps(w.user.id);
        expect(stamps.modseqs).toBe(stamps.rows); // every change has its own number, even inside one transaction

        const created: string[] = [];
        const updated: string[] = [];
        const removed: string[] = [];
        const tokens: string[] = [a.token!];
        let last = position(a.token!).m;
        for (let guard = 0; ; guard++) {
          expect(guard).toBeLessThan(100);
          const page = await a.step({ maxChanges: 1 });
          const n = entries(page);
          expect(n).toBeLessThanOrEqual(1);
          if (page.moreAvailable) expect(n).toBe(1);
          created.push(...page.created.map((c) => c.id));
          updated.push(...page.updated.map((u) => u.id));
          removed.push(...page.removed.map((r) => `${r.id}:${r.reason}`));
          // Strictly advancing: never a token seen before, and the modseq it reflects only grows.
          expect(tokens).not.toContain(page.token);
          tokens.push(page.token);
          const m = position(page.token).m;
          expect(m).toBeGreaterThan(last);
          last = m;
          if (!page.moreAvailable) break;
        }

        expect(created.sort()).toEqual([...fresh].sort()); // each new item once, with its final flags
        expect(updated.sort()).toEqual([...held.slice(0, 6)].sort()); // each changed held item once
        expect(removed.sort()).toEqual([`${held[8]}:deleted`, `${held[9]}:moved`].sort());
        await expectHolds(w, a, 50);
        for (const id of fresh.slice(0, 4)) expect(a.items.get(id)!.isFlagged).toBe(true);

        // A brand-new device pages through the same folder one item at a time: each item exactly once.
        const b = new Replica(w, inbox.id, await w.device('device-b-0000000000'));
        const seen: string[] = [];
        for (let page = await b.step({ maxChanges: 1 }); ; page = await b.step({ maxChanges: 1 })) {
          expect(entries(page)).toBeLessThanOrEqual(1);
          seen.push(...page.created.map((c) => c.id));
          if (!page.moreAvailable) break;
        }
        expect(seen.length).toBe(new Set(seen).size);
        expect(seen.length).toBe((await w.store.folders.byId(w.user.id, inbox.id))!.totalCount);
        await expectHolds(w, b, 50);
      },
      { initial: 50, step: 50, max: 100 },
    ));

  // Regression (found by this suite): mid replay, a page's token used to carry only m = the last change processed,
  // and the next page decided created vs updated by `placedModseq <= m`. An item created after the replay began
  // whose `created` entry was skipped as superseded (edited later in the same batch) then went out as a bare
  // `updated`. Reproduction: the device holds one item; one transaction delivers X, delivers Y, flags X; sync at
  // maxChanges=1. The token now keeps the replay's starting modseq (ItemToken.h).
  test('regression: an item created, then edited later in the same batch, arrives as created (not a bare updated)', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      await fill(w, inbox.id, 1, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd();
      const [first, second] = [w.newItem(inbox.id, w.clock.now() + 1000), w.newItem(inbox.id, w.clock.now() + 2000)];
      const now = w.clock.now();
      const x = await w.store.run(function* (tx) {
        const created = yield* tx.items.create(first, now);
        yield* tx.items.create(second, now);
        yield* tx.items.update(w.user.id, created.id, { isFlagged: true }, now);
        return created.id;
      });
      const created: string[] = [];
      for (let page = await a.step({ maxChanges: 1 }); ; page = await a.step({ maxChanges: 1 })) {
        created.push(...page.created.map((c) => c.id)); // the Replica throws ProtocolViolation on the bare updated
        if (!page.moreAvailable) break;
      }
      expect(created).toContain(x);
      await expectHolds(w, a, 5);
    }));

  // The same batch against the small window: the page boundary now also falls inside phase B (evictions and
  // pull-ins), still one entry per page, still converging.
  test('with the window in play (evictions and pull-ins at one entry per page)', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const start = w.clock.now();
      const ids = await fill(w, inbox.id, 12, start);
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd(1);
      const newer = [0, 1, 2].map((i) => w.newItem(inbox.id, start + 100_000 + i * 1000));
      const old = w.newItem(inbox.id, start - 50_000);
      const now = w.clock.now();
      await w.store.run(function* (tx) {
        for (const item of newer) yield* tx.items.create(item, now); // evict three
        yield* tx.items.create(old, now); // an old message: below the window
        for (const id of ids.slice(-3)) yield* tx.items.delete(w.user.id, id, now); // pull three back in
        yield* tx.items.update(w.user.id, ids[8]!, { isFlagged: true }, now);
      });
      for (let page = await a.step({ maxChanges: 1 }); ; page = await a.step({ maxChanges: 1 })) {
        expect(entries(page)).toBeLessThanOrEqual(1);
        if (page.moreAvailable) expect(entries(page)).toBe(1);
        if (!page.moreAvailable) break;
      }
      await expectHolds(w, a, 5);
    }));

  // A move changes the counts of two folders under one modseq. Hierarchy paging by modseq alone would end page 1 at
  // that modseq and resume after it, skipping the second folder; the (modseq, id) cursor must not.
  test('hierarchy sync with maxChanges=1 does not skip the second folder of a move', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const archive = await w.folder('archive');
      const projects = await w.mail.createFolder(w.user.id, { displayName: 'Projects', parentId: null });
      const ids = await fill(w, inbox.id, 8, w.clock.now());
      const device = await w.device();
      const held = new Map<string, unknown>();
      const first = await syncHierarchy(w, device, held, undefined, 1);
      expect(first.pages.length).toBeGreaterThanOrEqual(10); // 9 well-known folders + Projects, one per page
      expect(held).toEqual(await currentFolders(w));

      await w.mail.move(w.user.id, ids[0]!, archive.id);
      const one = await syncHierarchy(w, device, held, first.token, 1);
      const touched = one.pages.flatMap((p) => p.updated.map((f) => f.id));
      expect(touched.sort()).toEqual([inbox.id, archive.id].sort());
      expect(one.pages[0]!.moreAvailable).toBe(true); // the two folders really were split across pages
      expect(held).toEqual(await currentFolders(w));

      // Many moves in one transaction, among four folders: each move stamps two folders with one modseq.
      const junk = (await w.folder('junkEmail')).id;
      const trash = (await w.folder('deletedItems')).id;
      const now = w.clock.now();
      await w.store.run(function* (tx) {
        yield* tx.items.move(w.user.id, ids[1]!, projects.id, now);
        yield* tx.items.move(w.user.id, ids[2]!, archive.id, now);
        yield* tx.items.move(w.user.id, ids[1]!, junk, now);
        yield* tx.items.move(w.user.id, ids[3]!, trash, now); // a delete: to Deleted Items
        yield* tx.items.update(w.user.id, ids[4]!, { isRead: true }, now); // unread count of inbox only
      });
      const many = await syncHierarchy(w, device, held, one.token, 1);
      const names = new Set(many.pages.flatMap((p) => p.updated.map((f) => f.id)));
      expect(names).toEqual(new Set([inbox.id, archive.id, projects.id, (await w.folder('junkEmail')).id, (await w.folder('deletedItems')).id]));
      expect(held).toEqual(await currentFolders(w));
    }));
});

describe.each(STORE_BACKENDS)('%s: the item at the window\'s lower edge leaves the folder', (backend) => {
  const withWorld = worldsOn(backend);
  // The device's lower bound is the oldest item it holds, and the history filters keep changes with a sort key
  // ≥ that bound. Were the filter strict (>), the change of exactly that item would be filtered out: moved away or
  // deleted, it would stay on the device for good. Random histories rarely put the edge item in play (the
  // convergence property did not catch the strict filter in 200 runs), so here it is on purpose, both ways out.
  test('moved out, then deleted for good: each is removed and the next older item is pulled in', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const projects = await w.mail.createFolder(w.user.id, { displayName: 'Projects', parentId: null });
      const ids = await fill(w, inbox.id, 8, w.clock.now() - 60_000); // oldest first; the window holds ids[3..7]
      const r = new Replica(w, inbox.id, await w.device());
      await r.syncToEnd();
      expect([...r.items.keys()].sort()).toEqual(ids.slice(3).sort());

      await w.mail.move(w.user.id, ids[3]!, projects.id);
      const moved = await r.syncToEnd();
      expect(moved.removed).toEqual([{ id: ids[3], reason: 'moved' }]);
      expect(moved.created.map((c) => c.id)).toEqual([ids[2]]);
      await expectHolds(w, r, 5);

      await w.mail.delete(w.user.id, ids[2]!, true);
      const deleted = await r.syncToEnd();
      expect(deleted.removed.map((x) => x.id)).toEqual([ids[2]]);
      expect(deleted.created.map((c) => c.id)).toEqual([ids[1]]);
      await expectHolds(w, r, 5);
    }));
});

describe.each(STORE_BACKENDS)('%s: mass delete below the window sends nothing', (backend) => {
  const withWorld = worldsOn(backend);
  // How many items: on PostgreSQL each change in a unit is a few round trips (and changes to one folder in one
  // transaction grow slower as it goes: ~3 ms each at first, ~9 ms after 4,000), so 10,000 creates and 8,000
  // removals would take minutes there. 2,000 keep the point: the removals still span many pages of 100.
  const total = backend === 'sqlite' ? 10_000 : 2_000;
  const [deleted, moved] = [total * 0.6, total * 0.2];
  // nextcloud/mail #11908: a mass delete on the server became a mass wipe on the phone. Removing 6,000 items the
  // device never held must cost it nothing. Without the `(received_at, id) >= lower` filter in sync.changes, the
  // next sync would carry 6,000 `removed` entries over 60 pages (or 6,000 pages at maxChanges=1).
  test(`${total} items, the device holds the 5 newest, ${deleted} old ones are deleted for good: no removed, one page`, () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const start = w.clock.now();
      const newItems = Array.from({ length: total }, (_, i) => w.newItem(inbox.id, start + i * 1000));
      const ids = await w.store.run(function* (tx) {
        const made: string[] = [];
        for (const item of newItems) made.push((yield* tx.items.create(item, start)).id);
        return made;
      });
      const a = new Replica(w, inbox.id, await w.device());
      const b = new Replica(w, inbox.id, await w.device('device-b-0000000000'));
      await a.syncToEnd();
      await b.syncToEnd(100, true); // an extended window of 10
      await expectHolds(w, a, 5);
      await expectHolds(w, b, 10);

      const now = w.clock.now();
      await w.store.run(function* (tx) {
        for (const id of ids.slice(0, deleted)) yield* tx.items.delete(w.user.id, id, now);
      });
      // And 2,000 (a fifth) more old ones to Deleted Items (a move out of the folder: below the window, also nothing).
      const trash = (await w.folder('deletedItems')).id;
      await w.store.run(function* (tx) {
        for (const id of ids.slice(deleted, deleted + moved)) yield* tx.items.move(w.user.id, id, trash, now);
      });

      for (const [replica, maxChanges] of [[a, 100], [b, 1]] as const) {
        const pagesBefore = replica.pages;
        const page = await replica.step({ maxChanges });
        expect(page).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });
        expect(page.window.itemsInFolder).toBe(total - deleted - moved);
        expect(replica.pages - pagesBefore).toBe(1);
      }
      await expectHolds(w, a, 5);
      await expectHolds(w, b, 10);

      // The same device is told at once when one of *its* items goes: one removal, one pull-in.
      await w.mail.delete(w.user.id, ids[total - 1]!, true);
      const page = await a.step();
      expect(page.removed).toEqual([{ id: ids[total - 1], reason: 'deleted' }]);
      expect(page.created.map((c) => c.id)).toEqual([ids[total - 6]]);
      await expectHolds(w, a, 5);
    }), 120_000);
});

describe.each(STORE_BACKENDS)('%s: moved item keeps its id and is not duplicated', (backend) => {
  const withWorld = worldsOn(backend);
  // proton-bridge #220, tine20 #7297: ids that change on a move make the app hold two copies (or re-download).
  // Were a move a delete + create under a new id, the source would report `deleted`, the destination a different
  // id, and the id census below would change.
  test('source reports removed/moved, destination created with the same id; never two copies; ids never change', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const trash = await w.folder('deletedItems');
      const projects = await w.mail.createFolder(w.user.id, { displayName: 'Projects', parentId: null });
      const start = w.clock.now();
      const inInbox = await fill(w, inbox.id, 3, start);
      await fill(w, projects.id, 3, start - 60_000);
      const census = () => w.itemIds('id');
      const ids = await census();
      const device = await w.device();
      const ri = new Replica(w, inbox.id, device);
      const rp = new Replica(w, projects.id, device);
      const rt = new Replica(w, trash.id, device);
      const all = [ri, rp, rt];
      const syncAll = async () => {
        const pages = [];
        for (const r of all) pages.push(await r.syncToEnd());
        return pages;
      };
      const copies = (id: string) => all.filter((r) => r.items.has(id)).length;
      await syncAll();

      const x = inInbox[2]!; // the newest: inside the window wherever it goes
      await w.mail.move(w.user.id, x, projects.id);
      const [pi, pp] = await syncAll();
      expect(pi!.removed).toEqual([{ id: x, reason: 'moved' }]);
      expect(pp!.created.map((c) => [c.id, c.folderId])).toEqual([[x, projects.id]]);
      expect(copies(x)).toBe(1);
      expect(rp.items.get(x)).toEqual(expect.objectContaining({ id: x, folderId: projects.id }));

      // Deleting (to Deleted Items) is a move too: same id there.
      await w.mail.delete(w.user.id, x, false);
      const [, pp2, pt2] = await syncAll();
      expect(pp2!.removed).toEqual([{ id: x, reason: 'moved' }]);
      expect(pt2!.created.map((c) => c.id)).toEqual([x]);
      expect(copies(x)).toBe(1);

      // Back and forth between two syncs: one copy, in the folder it ended in.
      await w.mail.move(w.user.id, x, inbox.id);
      await w.mail.move(w.user.id, x, projects.id);
      await w.mail.move(w.user.id, x, inbox.id);
      const [pi3] = await syncAll();
      expect(pi3!.created.filter((c) => c.id === x)).toHaveLength(1);
      expect(copies(x)).toBe(1);
      expect(ri.items.get(x)!.folderId).toBe(inbox.id);

      for (const r of all) await expectHolds(w, r, 5);
      expect(await census()).toEqual(ids); // no move ever minted a new id
    }));
});

describe('token of another device / folder / user, forged or altered, expired, reset (over HTTP)', () => {
  let ctx: TestContext;
  const PW = 'password-for-tests';
  interface Dev {
    user: string;
    deviceId: string;
    id: string;
    access: string;
  }
  let aliceA: Dev;
  let aliceB: Dev;
  let bob: Dev;
  let inbox: string;
  let archive: string;
  let bobInbox: string;
  let aliceId: string;

  async function register(user: string, deviceId: string): Promise<Dev> {
    const t = await signIn(ctx, user, PW, { device_id: deviceId });
    const res = await request(ctx.app)
      .post('/v1/devices')
      .set('Authorization', `Bearer ${t.access_token}`)
      .set('X-Device-Id', deviceId)
      .send({ friendlyName: `${user}'s phone` });
    expect([200, 201]).toContain(res.status);
    return { user, deviceId, id: res.body.id, access: t.access_token };
  }
  /** Access tokens live an hour; tests that move the clock by days sign in again. */
  async function renew(d: Dev) {
    d.access = (await signIn(ctx, d.user, PW, { device_id: d.deviceId })).access_token;
  }
  const get = (d: Dev, url: string) => request(ctx.app).get(url).set('Authorization', `Bearer ${d.access}`).set('X-Device-Id', d.deviceId);
  const itemSync = (d: Dev, folderId: string, token?: string) =>
    get(d, `/v1/folders/${folderId}/items/sync?maxChanges=100${token !== undefined ? `&token=${encodeURIComponent(token)}` : ''}`);
  const folderSync = (d: Dev, token?: string) => get(d, `/v1/folders/sync${token !== undefined ? `?token=${encodeURIComponent(token)}` : ''}`);
  async function syncToEnd(d: Dev, folderId: string, token?: string) {
    for (let guard = 0; guard < 100; guard++) {
      const res = await itemSync(d, folderId, token);
      expect(res.status).toBe(200);
      token = res.body.token as string;
      if (!res.body.moreAvailable) return res.body as ItemSyncPage;
    }
    throw new Error('did not terminate');
  }
  function expectProblem(res: request.Response, status: number, code: string, reason?: string) {
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(res.body).toMatchObject({ status, code, ...(reason ? { reason } : {}) });
    expect(res.status).toBe(status);
  }
  /** One base64url character replaced by another. */
  const flip = (text: string, at: number) => text.slice(0, at) + (text[at] === 'A' ? 'B' : 'A') + text.slice(at + 1);

  beforeAll(async () => {
    ctx = await buildTestApp();
    const alice = await ctx.users.addUser({ username: 'alice', password: PW, role: 'user' });
    const b = await ctx.users.addUser({ username: 'bob', password: PW, role: 'user' });
    aliceId = alice.id;
    aliceA = await register('alice', 'alice-phone-0000000001');
    aliceB = await register('alice', 'alice-tablet-000000002');
    bob = await register('bob', 'bob-phone-000000000003');
    inbox = (await ctx.store.folders.byKind(alice.id, 'inbox'))!.id;
    archive = (await ctx.store.folders.byKind(alice.id, 'archive'))!.id;
    bobInbox = (await ctx.store.folders.byKind(b.id, 'inbox'))!.id;
    for (let i = 0; i < 8; i++) {
      await ctx.store.items.create({ userId: alice.id, folderId: inbox, type: 'email', receivedAt: ctx.clock.now() - i * 1000, subject: `m${i}` }, ctx.clock.now());
    }
  });
  afterAll(() => ctx.close());

  // Breaks if decode stopped comparing the token's user, device record, folder or kind with the request's: a token
  // would then be served against another held set (another device's position, another folder's ids).
  test('token of another device / folder / user → 400 invalidToken', async () => {
    const mine = (await syncToEnd(aliceA, inbox)).token;
    const hierarchy = (await folderSync(aliceA)).body.token as string;

    expectProblem(await itemSync(aliceB, inbox, mine), 400, 'invalidToken'); // another device of the same user
    expectProblem(await itemSync(aliceA, archive, mine), 400, 'invalidToken'); // another folder
    expectProblem(await itemSync(bob, bobInbox, mine), 400, 'invalidToken'); // another user, on his own folder
    expectProblem(await itemSync(bob, inbox, mine), 404, 'folderNotFound'); // alice's folder does not exist for bob
    expectProblem(await itemSync(aliceA, inbox, hierarchy), 400, 'invalidToken'); // another kind of token
    expectProblem(await folderSync(aliceA, mine), 400, 'invalidToken');
    expectProblem(await folderSync(aliceB, hierarchy), 400, 'invalidToken');
    expectProblem(await folderSync(bob, hierarchy), 400, 'invalidToken');

    // None of that harmed the rightful owner.
    expect((await itemSync(aliceA, inbox, mine)).body).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });
    expect((await folderSync(aliceA, hierarchy)).status).toBe(200);
  });

  // Breaks if the MAC were not checked (or not over the whole `version.payload`), or were checked with a
  // non-secret key: an app (or attacker) could then claim any position, e.g. a later modseq to skip changes.
  test('forged or altered token → 400 invalidToken', async () => {
    const good = (await syncToEnd(aliceA, inbox)).token;
    const other = (await itemSync(aliceA, archive)).body.token as string; // another valid token (another folder)
    const [version, payload, mac] = good.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as ItemToken;
    const reencode = (c: object) => Buffer.from(JSON.stringify(c)).toString('base64url');
    const foreign = createTokenCodec(Buffer.alloc(32, 9)); // another server's secret, same claims

    const forgeries: Array<[string, string]> = [
      ['a byte of the payload flipped', `${version}.${flip(payload, 10)}.${mac}`],
      ['the last byte of the payload flipped', `${version}.${flip(payload, payload.length - 1)}.${mac}`],
      ['a byte of the MAC flipped', `${version}.${payload}.${flip(mac, 3)}`],
      ['the MAC of another valid token', `${version}.${payload}.${other.split('.')[2]}`],
      ['a later modseq claimed, MAC kept', `${version}.${reencode({ ...claims, m: claims.m + 1 })}.${mac}`],
      ['another folder claimed, MAC kept', `${version}.${reencode({ ...claims, f: archive })}.${mac}`],
      ['another version', `p2.${payload}.${mac}`],
      ['signed with another secret', foreign.encode(claims)],
      ['no MAC', `${version}.${payload}`],
      ['an extra part', `${good}.x`],
      ['not a token at all', 'hello'],
    ];
    for (const [what, token] of forgeries) {
      const res = await itemSync(aliceA, what === 'another folder claimed, MAC kept' ? archive : inbox, token);
      expect({ what, status: res.status, code: res.body.code }).toEqual({ what, status: 400, code: 'invalidToken' });
    }
    expect((await itemSync(aliceA, inbox, good)).status).toBe(200);
  });

  // Breaks if purged history were served as if complete (changes in the purged range silently skipped), or if a
  // no-change poll left its token's modseq behind (a device polling daily would then expire after 30 days).
  test('expired token → 410 tokenExpired; a token that kept polling stays valid', async () => {
    const t0 = ctx.clock.now();
    const stale = (await syncToEnd(aliceA, inbox)).token;
    const staleHierarchy = (await folderSync(aliceA)).body.token as string;
    const poller = (await syncToEnd(aliceB, inbox)).token;

    ctx.clock.set(t0 + 1 * DAY);
    await ctx.store.items.create({ userId: aliceId, folderId: archive, type: 'email', receivedAt: ctx.clock.now(), subject: 'elsewhere' }, ctx.clock.now());
    ctx.clock.set(t0 + 2 * DAY);
    await renew(aliceB);
    const poll = await itemSync(aliceB, inbox, poller);
    expect(poll.body).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });
    expect(poll.body.token).not.toBe(poller); // the inbox did not change, but the token now reflects day 1's modseq
    const polled = poll.body.token as string;

    ctx.clock.set(t0 + 33 * DAY);
    await renew(aliceA);
    await renew(aliceB);
    expect(await ctx.store.mailboxes.purgeHistory(ctx.clock.now() - 30 * DAY)).toBeGreaterThan(0);

    expectProblem(await itemSync(aliceA, inbox, stale), 410, 'resyncRequired', 'tokenExpired');
    expectProblem(await folderSync(aliceA, staleHierarchy), 410, 'resyncRequired', 'tokenExpired');
    expectProblem(await itemSync(aliceB, inbox, poller), 410, 'resyncRequired', 'tokenExpired'); // the pre-poll token
    expect((await itemSync(aliceB, inbox, polled)).body).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });

    // The expired device starts over and holds the window again.
    const again = await syncToEnd(aliceA, inbox);
    expect(again.window.itemsInFolder).toBe(8);
  });

  // Breaks if the epochs were not in the token (or not compared): a reset mailbox or device would be served deltas
  // against state it no longer has.
  test('mailbox reset / device reset → 410 with reason', async () => {
    await renew(aliceA);
    await renew(aliceB);
    const a = (await syncToEnd(aliceA, inbox)).token;
    const ah = (await folderSync(aliceA)).body.token as string;
    const b = (await syncToEnd(aliceB, inbox)).token;
    const bh = (await folderSync(aliceB)).body.token as string;

    await ctx.store.devices.bumpEpoch(aliceB.id, ctx.clock.now()); // what the admin "resync" does
    expectProblem(await itemSync(aliceB, inbox, b), 410, 'resyncRequired', 'deviceReset');
    expectProblem(await folderSync(aliceB, bh), 410, 'resyncRequired', 'deviceReset');
    expect((await itemSync(aliceA, inbox, a)).status).toBe(200); // only that device
    expect((await folderSync(aliceA, ah)).status).toBe(200);
    const b2 = (await syncToEnd(aliceB, inbox)).token;

    await ctx.store.mailboxes.resetEpoch(aliceId);
    for (const [d, t] of [[aliceA, a], [aliceB, b2]] as const) {
      expectProblem(await itemSync(d, inbox, t), 410, 'resyncRequired', 'mailboxReset');
    }
    expectProblem(await folderSync(aliceA, ah), 410, 'resyncRequired', 'mailboxReset');
    const fresh = await syncToEnd(aliceA, inbox);
    expect((await itemSync(aliceA, inbox, fresh.token)).status).toBe(200);
  });
});

describe.each(STORE_BACKENDS)('%s: forged or altered token → 400 (every single-character change)', (backend) => {
  const withWorld = worldsOn(backend);
  // The HTTP test above shows a few; here every position of a real token is altered in turn.
  test('any one character changed, anywhere in the token, is refused as invalidToken', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      await fill(w, inbox.id, 7, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());
      await a.step({ maxChanges: 2 });
      const good = a.token!;
      for (let at = 0; at < good.length; at++) {
        a.token = good.slice(0, at) + (good[at] === 'A' ? 'B' : 'A') + good.slice(at + 1);
        const err = await refused(() => a.step());
        expect({ at, status: err.status, code: err.code }).toEqual({ at, status: 400, code: 'invalidToken' });
      }
      a.token = good;
      await a.syncToEnd();
      await expectHolds(w, a, 5);
    }));
});

/** Runs one of PostgreSQL's client programs (pg_dump, pg_restore); throws with its output when it fails. */
function pgProgram(program: string, args: string[]) {
  const r = spawnSync(program, args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${program} could not run (${r.error.message}): install PostgreSQL's client programs`);
  if (r.status !== 0) throw new Error(`${program} failed: ${`${r.stdout}${r.stderr}`.trim()}`);
}

/**
 * Backs the live world's whole store up, the backend's way, into `dir`; returns how to restore it as a store of its
 * own. SQLite: the online backup API, restored by opening the copy. PostgreSQL: pg_dump (one consistent snapshot,
 * taken while the store runs), restored with pg_restore into a fresh database.
 */
async function backUp(live: SyncWorld, dir: string): Promise<() => Promise<WorldStore>> {
  const file = path.join(dir, 'backup');
  if (live.backend === 'sqlite') {
    await live.sqlite.db.backup(file);
    return async () => WorldStore.overFile(file);
  }
  pgProgram('pg_dump', ['--format=custom', `--file=${file}`, `--dbname=${live.host.database!.url}`]);
  return async () => {
    const database = await freshDatabase('pigeon_restored');
    try {
      pgProgram('pg_restore', ['--no-owner', '--exit-on-error', `--dbname=${database.url}`, file]);
    } catch (err) {
      await database.drop();
      throw err;
    }
    return WorldStore.overDatabase(database);
  };
}

describe.each(STORE_BACKENDS)('%s: restored backup answers 410 rather than wrong data', (backend) => {
  // matrix spec PR #2855: a restored backup replayed tokens as if valid. The device's token was issued by the live
  // store *after* the backup; the restored store has never reached that modseq. Serving it a page would skip the
  // lost changes and leave the device holding items the restored store never had.
  async function scenario(afterRestore?: (restored: SyncWorld) => Promise<unknown>) {
    const live = await SyncWorld.open({ backend });
    const backups = tempDir('pigeon-backup-');
    const cleanup: Array<() => Promise<void> | void> = [() => fs.rmSync(backups, { recursive: true, force: true })];
    const cleanUp = async () => {
      for (const f of cleanup) await f();
    };
    try {
      const inbox = await live.folder('inbox');
      const ids = await fill(live, inbox.id, 8, live.clock.now());
      const device = await live.device();
      const a = new Replica(live, inbox.id, device);
      await a.syncToEnd();
      const held = new Map<string, unknown>();
      const h = await syncHierarchy(live, device, held, undefined, 100);
      const atBackup = a.token!;

      const restore = await backUp(live, backups);

      // The live store moves on, and the device with it.
      await live.deliver(inbox.id, live.clock.now() + 100_000);
      await live.mail.update(live.user.id, ids[7]!, { isFlagged: true });
      await live.mail.move(live.user.id, ids[6]!, (await live.folder('archive')).id);
      await a.syncToEnd();
      const h2 = await syncHierarchy(live, device, held, h.token, 100);
      expect(position(a.token!).m).toBeGreaterThan(position(atBackup).m);
      await live.close();

      // The backup is restored: the same secret, the same users, device records and epoch.
      const restored = await SyncWorld.open({ restored: await restore() });
      cleanup.unshift(() => restored.close());
      await afterRestore?.(restored);
      const ra = new Replica(restored, inbox.id, await restored.device(device.deviceId));
      expect(ra.device.id).toBe(device.id);
      ra.items = new Map(a.items);
      ra.token = a.token;
      return { restored, ra, hierarchyToken: h2.token, atBackup, done: cleanUp };
    } catch (err) {
      await cleanUp();
      throw err;
    } finally {
      await live.close();
    }
  }

  test("the device's newer item and hierarchy tokens get 410 mailboxReset, never a page", async () => {
    const { restored, ra, hierarchyToken, done } = await scenario();
    try {
      const err = await refused(() => ra.step());
      expect([err.status, err.code, err.extra.reason]).toEqual([410, 'resyncRequired', 'mailboxReset']);
      const herr = await refused(() => restored.syncFolders({ userId: restored.user.id, device: ra.device, token: hierarchyToken, maxChanges: 100 }));
      expect([herr.status, herr.code, herr.extra.reason]).toEqual([410, 'resyncRequired', 'mailboxReset']);
      // Starting over on the restored store converges.
      ra.items.clear();
      ra.token = undefined;
      await ra.syncToEnd();
      await expectHolds(restored, ra, 5);
    } finally {
      await done();
    }
  });

  test('after `reset-mailbox` (resetEpoch) even a token from before the backup gets 410 mailboxReset', async () => {
    const { ra, atBackup, done } = await scenario((r) => r.store.mailboxes.resetEpoch(r.user.id));
    try {
      for (const token of [ra.token, atBackup]) {
        ra.token = token;
        expect((await refused(() => ra.step())).extra.reason).toBe('mailboxReset');
      }
    } finally {
      await done();
    }
  });

  // KNOWN GAP (reported): the only restore detection without an operator's `reset-mailbox` is "the token's modseq
  // is above the store's". Once the restored store has taken more modseqs than the backup lost (here: new mail
  // arrives before the device comes back), the device's token looks valid, the changes numbered in between on the
  // restored store are never sent, and the device keeps items the restored store never had. A store epoch that
  // changes whenever the file is restored (or a fingerprint of the change at modseq m in the token) would catch it.
  test.failing('without reset-mailbox, once the restored store has overtaken the lost modseqs, the token still gets 410', async () => {
    const { ra, done } = await scenario(async (r) => {
      for (let i = 0; i < 10; i++) await r.deliver((await r.folder('inbox')).id, r.clock.now() + 300_000 + i * 1000);
    });
    try {
      const err = await refused(() => ra.step()); // fails: a page is served
      expect(err.extra.reason).toBe('mailboxReset');
    } finally {
      await done();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Random histories: the per-page promises, checked explicitly before each page is applied.

type Op =
  | { t: 'deliver'; folder: number; age: number }
  | { t: 'flag' | 'read' | 'trash' | 'purge'; item: number }
  | { t: 'move'; item: number; folder: number }
  | { t: 'batch'; n: number; folder: number }
  | { t: 'advance'; ms: number }
  | { t: 'sync'; pages: number; maxChanges: number; loadMore: boolean; lose: boolean };

/** Which item an edit picks: 0 is the most recently changed. Half the picks hit one of the 3 most recent (fresh mail
 * is what gets edited, and "created, then edited before the device synced" is where created vs updated is decided). */
const itemArb = fc.oneof(fc.nat(2), fc.nat(50));

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('deliver' as const), folder: fc.nat(2), age: fc.nat(30) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constantFrom('flag' as const, 'read' as const), item: itemArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('trash' as const, 'purge' as const), item: itemArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('move' as const), item: itemArb, folder: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('batch' as const), n: fc.integer({ min: 2, max: 6 }), folder: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('advance' as const), ms: fc.constantFrom(60_000, TRIM_AFTER_MS + 1) }) },
  {
    weight: 4,
    arbitrary: fc.record({ t: fc.constant('sync' as const), pages: fc.integer({ min: 1, max: 4 }), maxChanges: fc.integer({ min: 1, max: 8 }), loadMore: fc.boolean(), lose: fc.boolean() }),
  },
);

type PageCheck = (w: SyncWorld, r: Replica, page: ItemSyncPage, heldBefore: Set<string>) => void | Promise<void>;

/** Runs a random history against three folders' replicas, checking every page (applied or lost) with `check`. */
async function randomHistory(withWorld: WithWorld, initial: number, ops: Op[], check: PageCheck) {
  await withWorld(async (w) => {
    const inbox = await w.folder('inbox');
    const trash = await w.folder('deletedItems');
    const projects = await w.mail.createFolder(w.user.id, { displayName: 'Projects', parentId: null });
    const folders = [inbox.id, projects.id, trash.id];
    const device = await w.device();
    const replicas = folders.map((f) => new Replica(w, f, device));
    const bases = new Map<Replica, number>();
    const pick = async (n: number) => {
      const ids = await w.itemIds('lastChanged');
      return ids.length ? ids[n % ids.length] : undefined;
    };
    let base = w.clock.now();
    for (let i = 0; i < initial; i++) await w.deliver(i % 3 === 2 ? projects.id : inbox.id, (base += 1000) - (i % 4) * 2500);

    const step = async (r: Replica, opts: { maxChanges: number; loadMore?: boolean; lose?: boolean }) => {
      const before = r.token;
      const heldBefore = new Set(r.items.keys());
      const page = await r.step({ ...opts, lose: true });
      await check(w, r, page, heldBefore);
      if (!opts.lose) {
        await r.apply(page, before); // and the Replica's own protocol checks
        const at = position(page.token);
        if (at.z === 1 || !bases.has(r)) bases.set(r, at.m);
      }
      return page;
    };

    for (const o of ops) {
      switch (o.t) {
        case 'deliver':
          await w.deliver(folders[o.folder]!, (base += 1000) - o.age * 5000);
          break;
        case 'flag':
        case 'read': {
          const id = await pick(o.item);
          if (id) await w.mail.update(w.user.id, id, o.t === 'flag' ? { isFlagged: !(await w.store.items.byId(w.user.id, id))!.isFlagged } : { isRead: true });
          break;
        }
        case 'trash':
        case 'purge': {
          const id = await pick(o.item);
          if (id) await w.mail.delete(w.user.id, id, o.t === 'purge');
          break;
        }
        case 'move': {
          const id = await pick(o.item);
          if (id) await w.mail.move(w.user.id, id, folders[o.folder]!);
          break;
        }
        case 'batch': {
          // Several changes in one transaction: new mail, then edits to the first of it and to older mail (the one
          // picked before the batch: a unit of work reads only through its steps).
          const newItems = Array.from({ length: o.n }, () => w.newItem(folders[o.folder]!, (base += 1000)));
          const older = await pick(1);
          const now = w.clock.now();
          await w.store.run(function* (tx) {
            const fresh: string[] = [];
            for (const item of newItems) fresh.push((yield* tx.items.create(item, now)).id);
            yield* tx.items.update(w.user.id, fresh[0]!, { isFlagged: true }, now);
            if (older) yield* tx.items.update(w.user.id, older, { categories: [`b${o.n}`] }, now);
          });
          break;
        }
        case 'advance':
          w.clock.advance(o.ms);
          break;
        case 'sync':
          for (const r of replicas) {
            for (let i = 0; i < o.pages; i++) {
              const page = await step(r, { maxChanges: o.maxChanges, loadMore: o.loadMore && i === 0, lose: o.lose && i === 0 });
              if (!page.moreAvailable) break;
            }
          }
          break;
      }
    }
    // Drain every replica (each page checked). Convergence itself is convergence.test.ts's property (and the known
    // phase-B bug in the trim tests below would fail it here for reasons outside these two properties).
    for (const r of replicas) {
      let page = await step(r, { maxChanges: 3 });
      while (page.moreAvailable) page = await step(r, { maxChanges: 3 });
    }
  });
}

const RUNS = 100;
/** PostgreSQL's 100 runs take ~20 s on two cores; SQLite's a few. */
const PROPERTY_TIMEOUT_MS = 180_000;

describe.each(STORE_BACKENDS)('%s: random histories', (backend) => {
  const withWorld = worldsOn(backend);
  // Breaks if phase A sent `updated` for an item placed in the folder after the token's modseq (moved in, or
  // created then edited before the device synced), or for an item only pulled in by this very page.
  test(`updated never names an item the device does not hold (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(20), fc.array(opArb, { minLength: 1, maxLength: 40 }), (initial, ops) =>
        randomHistory(withWorld, initial, ops, (_w, _r, page, heldBefore) => {
          for (const u of page.updated) expect({ updated: u.id, held: heldBefore.has(u.id) }).toEqual({ updated: u.id, held: true });
        }),
      ),
      { numRuns: RUNS, maxSkipsPerRun: 1000 },
    );
  }, PROPERTY_TIMEOUT_MS);

  // Breaks if a delete/move tombstone were sent for an item that is back in the window (moved back, or still there),
  // or if eviction ran past the window's boundary. Also checks that each reason tells the truth.
  test(`removed never names an item inside the window (${RUNS} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(20), fc.array(opArb, { minLength: 1, maxLength: 40 }), (initial, ops) =>
        randomHistory(withWorld, initial, ops, async (w, r, page) => {
          const window = await w.expectedWindow(r.folderId, page.window.size);
          for (const { id, reason } of page.removed) {
            expect({ removed: id, reason, inWindow: window.has(id) }).toEqual({ removed: id, reason, inWindow: false });
            const now = await w.store.items.byId(w.user.id, id);
            if (reason === 'deleted') expect({ id, reason, exists: now !== undefined }).toEqual({ id, reason, exists: false });
            if (reason === 'moved') expect({ id, reason, stillHere: now?.folderId === r.folderId }).toEqual({ id, reason, stillHere: false });
            if (reason === 'evicted') expect({ id, reason, inFolder: now?.folderId === r.folderId }).toEqual({ id, reason, inFolder: true });
          }
        }),
      ),
      { numRuns: RUNS, maxSkipsPerRun: 1000 },
    );
  }, PROPERTY_TIMEOUT_MS);
});

// ---------------------------------------------------------------------------------------------------------------

interface WriteProbe {
  /** What a write would change; equal snapshots: nothing was written in between. */
  snapshot(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/**
 * Sees every write to the world's store. SQLite: total_changes() on the store's connection (rows it changed),
 * data_version from a second connection (commits) and the WAL's size (pages written). PostgreSQL: a fingerprint of
 * every row version in the database — its location (ctid) and creating transaction (xmin) with its values, so an
 * insert, a delete or any UPDATE (even one that sets the same values) shows — and, apart, the rows' xmax, which a
 * row lock (SELECT ... FOR UPDATE) also writes: the lock goes into the tuple on disk and through the WAL, and gives
 * the transaction an id whose commit is flushed like any other.
 */
async function writeProbe(w: SyncWorld): Promise<WriteProbe> {
  if (w.backend === 'sqlite') {
    const file = w.host.file!;
    const reader = openDatabase(file, { readonly: true });
    return {
      async snapshot() {
        return {
          totalChanges: (w.sqlite.db.prepare('SELECT total_changes() AS n').get() as { n: number }).n,
          dataVersion: Number(reader.pragma('data_version', { simple: true })),
          walBytes: fs.statSync(`${file}-wal`).size,
        };
      },
      async close() {
        reader.close();
      },
    };
  }
  const client = new Client({ connectionString: w.host.database!.url });
  await client.connect();
  const tables = (
    await client.query<{ name: string }>(
      `SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1`,
    )
  ).rows.map((r) => r.name);
  if (tables.length === 0) throw new Error('writeProbe: the database has no tables');
  const fingerprint = (expression: string) =>
    tables.map((t) => `SELECT '${t} ' || md5(coalesce(string_agg(${expression}, E'\\n' ORDER BY ctid), '')) AS md5 FROM ${t} AS r`).join(' UNION ALL ');
  const rowVersions = fingerprint(`ctid::text || ' ' || xmin::text || ' ' || r::text`);
  const rowLocks = fingerprint(`ctid::text || ' ' || xmax::text`);
  const digest = async (text: string) => (await client.query<{ md5: string }>(text)).rows.map((r) => r.md5).join(',');
  return {
    async snapshot() {
      return { rowVersions: await digest(rowVersions), rowLocks: await digest(rowLocks) };
    },
    close: () => client.end(),
  };
}

describe.each(STORE_BACKENDS)('%s: no-change sync performs no write', (backend) => {
  const withWorld = worldsOn(backend);
  // protocol.md §5: "a no-change sync returns an empty page and must cost no write to storage". Breaks if the
  // engine stored per-device sync state, stamped a last-sync time, or bumped anything on a poll (or, on
  // PostgreSQL, locked a row to read): the probe's snapshot (writeProbe) would move.
  test('the poll changes no row, commits nothing, returns an empty page and a stable token', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const archive = await w.folder('archive');
      await fill(w, inbox.id, 8, w.clock.now());
      const device = await w.device();
      const a = new Replica(w, inbox.id, device);
      await a.syncToEnd();
      const held = new Map<string, unknown>();
      const h = await syncHierarchy(w, device, held, undefined, 100);

      const probe = await writeProbe(w);
      try {
        const before = await probe.snapshot();
        const token = a.token;
        const p1 = await a.step();
        const p2 = await a.step();
        const hp = await w.syncFolders({ userId: w.user.id, device, token: h.token, maxChanges: 100 });
        expect(await probe.snapshot()).toEqual(before);
        for (const p of [p1, p2]) expect(p).toMatchObject({ token, created: [], updated: [], removed: [], moreAvailable: false });
        expect(hp).toMatchObject({ token: h.token, created: [], updated: [], deleted: [], moreAvailable: false });

        // Another folder changed: the inbox poll is still empty and still writes nothing (its token may advance).
        await w.deliver(archive.id, w.clock.now());
        const after = await probe.snapshot();
        for (const [what, value] of Object.entries(after)) {
          if (what !== 'rowLocks') expect({ what, moved: value !== before[what] }).toEqual({ what, moved: true }); // the probe does see real writes
        }
        const p3 = await a.step();
        expect(p3).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });
        expect(await probe.snapshot()).toEqual(after);
        expect((await a.step()).token).toBe(p3.token);
      } finally {
        await probe.close();
      }
    }));
});

describe.each(STORE_BACKENDS)('%s: loadMore extends to at most max and the window is trimmed back after the trim interval', (backend) => {
  const withWorld = worldsOn(backend);
  // Breaks if loadMore grew the window past `max`, if the trim fired early, late or never, or if a trim dropped
  // items silently (the app would keep them) or as `deleted` (the app would treat them as user deletes).
  test('5 → 10 → still 10; trimmed back to 5 once extended for the trim interval, the dropped items evicted', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const ids = await fill(w, inbox.id, 20, w.clock.now()); // oldest first
      const a = new Replica(w, inbox.id, await w.device());
      const first = await a.syncToEnd();
      expect(first.window).toEqual({ size: 5, max: 10, itemsInFolder: 20, hasOlder: true });

      const more = await a.syncToEnd(2, true);
      expect(more.window).toEqual({ size: 10, max: 10, itemsInFolder: 20, hasOlder: true });
      await expectHolds(w, a, 10);
      expect(new Set(a.items.keys())).toEqual(new Set(ids.slice(10)));

      const again = await a.step({ loadMore: true });
      expect(again).toMatchObject({ created: [], updated: [], removed: [], moreAvailable: false });
      expect(again.window.size).toBe(10); // never beyond max
      await expectHolds(w, a, 10);

      // The interval runs from the last loadMore.
      w.clock.advance(TRIM_AFTER_MS - 1);
      const early = await a.step();
      expect(early).toMatchObject({ created: [], updated: [], removed: [], window: { size: 10 } });
      w.clock.advance(1);
      const trimmed: ItemSyncPage[] = [];
      let page = await a.step({ maxChanges: 2 });
      trimmed.push(page);
      while (page.moreAvailable) trimmed.push((page = await a.step({ maxChanges: 2 })));
      const evicted = trimmed.flatMap((p) => p.removed);
      expect(evicted).toEqual(ids.slice(10, 15).map((id) => ({ id, reason: 'evicted' }))); // oldest first
      expect(trimmed.flatMap((p) => [...p.created, ...p.updated])).toEqual([]);
      expect(page.window).toEqual({ size: 5, max: 10, itemsInFolder: 20, hasOlder: true });
      await expectHolds(w, a, 5);
      for (const { id } of evicted) expect((await w.store.items.byId(w.user.id, id))!.folderId).toBe(inbox.id); // not deleted
      expect(await a.step()).toMatchObject({ created: [], updated: [], removed: [], window: { size: 5 } });
    }));

  // KNOWN BUG (reported; breaks the convergence invariant of protocol.md §5: after a complete sync the device holds
  // items outside its window that are never evicted). Phase B fetches `room + 1 + created.length` rows to evict and,
  // when the loop ends without filling the page, sets the lower bound to the window's boundary as if the range were
  // drained. A row whose eviction replaces an `updated` entry of the same page takes no net room, and a row that
  // cancels a `created` frees one, so the fetch runs out before the page is full and the rest of the range is never
  // evicted. Fix: fetch until the page is full or a fetch returns fewer rows than asked; only then lower = target.
  // Found by the random-history properties below (counterexample: a batch of new mail, a page boundary, then a move).
  test('regression: a trim whose first eviction replaces an `updated` entry still evicts every dropped item', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const ids = await fill(w, inbox.id, 10, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd();
      await a.syncToEnd(100, true); // holds all 10
      await w.mail.update(w.user.id, ids[0]!, { isFlagged: true }); // the oldest: updated, then evicted in the same page
      w.clock.advance(TRIM_AFTER_MS);
      const last = await a.syncToEnd(2);
      expect(last.window.size).toBe(5);
      await expectHolds(w, a, 5); // fails: ids[2..4] are never evicted (the app keeps 8 items)
    }));

  test('regression: a trim whose first rows cancel this page\'s `created` entries still evicts every dropped item', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      const start = w.clock.now();
      const ids = await fill(w, inbox.id, 12, start);
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd();
      await a.syncToEnd(100, true); // holds ids[2..11]; the lower bound is ids[2]
      const old = [w.newItem(inbox.id, start + 2300), w.newItem(inbox.id, start + 2600)];
      const now = w.clock.now();
      await w.store.run(function* (tx) {
        yield* tx.items.delete(w.user.id, ids[2]!, now);
        for (const item of old) yield* tx.items.create(item, now); // two old messages just above the lower bound: created, then evicted
      });
      w.clock.advance(TRIM_AFTER_MS);
      await a.syncToEnd(4);
      await expectHolds(w, a, 5); // fails: ids[5] and ids[6] are never evicted
    }));

  test('loadMore on a folder smaller than max: everything, hasOlder false', () =>
    withWorld(async (w) => {
      const inbox = await w.folder('inbox');
      await fill(w, inbox.id, 7, w.clock.now());
      const a = new Replica(w, inbox.id, await w.device());
      await a.syncToEnd();
      const page = await a.syncToEnd(100, true);
      expect(page.window).toEqual({ size: 10, max: 10, itemsInFolder: 7, hasOlder: false });
      await expectHolds(w, a, 10);
      expect(a.items.size).toBe(7);
    }));
});

describe.each(STORE_BACKENDS)('%s: calendar and contacts have no window', (backend) => {
  const withWorld = worldsOn(backend);
  // Breaks if the window applied to calendar/contacts (only 5 of 23 events would arrive, the rest never).
  test('every item is paged to the device, window.max is null, and nothing is ever evicted', () =>
    withWorld(async (w) => {
      const device = await w.device();
      for (const [kind, type, n] of [['calendar', 'event', 23], ['contacts', 'contact', 17]] as const) {
        const folder = await w.folder(kind);
        const create = (i: number) =>
          w.store.items.create(
            { userId: w.user.id, folderId: folder.id, type, receivedAt: w.clock.now() - i * 60_000, subject: `${type} ${i}`, data: type === 'event' ? { start: '2026-02-01T10:00:00Z', end: '2026-02-01T11:00:00Z' } : { givenName: `G${i}` } },
            w.clock.now(),
          );
        for (let i = 0; i < n; i++) await create(i);
        const r = new Replica(w, folder.id, device);
        const pages: ItemSyncPage[] = [];
        let page = await r.step({ maxChanges: 4 });
        pages.push(page);
        while (page.moreAvailable) pages.push((page = await r.step({ maxChanges: 4 })));
        expect(pages.length).toBeGreaterThanOrEqual(Math.ceil(n / 4));
        for (const p of pages) {
          expect(p.window).toEqual({ size: n, max: null, itemsInFolder: n, hasOlder: false });
          expect(p.removed).toEqual([]);
        }
        expect(r.items.size).toBe(n);
        await expectHolds(w, r, 10_000);

        // More items: all arrive, none is evicted; loadMore changes nothing.
        for (let i = n; i < n + 6; i++) await create(i);
        const more = await r.syncToEnd(100, true);
        expect(more.window).toEqual({ size: n + 6, max: null, itemsInFolder: n + 6, hasOlder: false });
        expect(more.removed).toEqual([]);
        expect(r.items.size).toBe(n + 6);
        await expectHolds(w, r, 10_000);
      }
    }));
});
