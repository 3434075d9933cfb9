/**
 * The store contract under concurrent writers on one mailbox. On SQLite the writers interleave on the event loop
 * (every unit runs whole inside its transaction); on PostgreSQL they run at the same time on separate connections.
 * Either way: every change takes a modseq of its own, the modseqs a writer sees rise, read-then-write units lose no
 * update, the folder counters end where the operations say, and a reader that follows the history with a cursor
 * never misses a change (one committed later with a smaller modseq than the reader has already passed).
 */
import type { Item } from '../../../server/store/types';
import { HIGHEST, LOWEST, NOW, eachBackend, email, highestModseq, newMailbox, recordCommits, sorted } from './fixtures';

const WRITERS = 8;
const MUTATIONS = 50;
const PAGE = 25;

/** An item as its writer last left it. */
interface Owned {
  id: string;
  folderId: string;
  isRead: boolean;
  isFlagged: boolean;
  deleted: boolean;
}

eachBackend('concurrent writers', (t) => {
  test(`${WRITERS} writers × ${MUTATIONS} changes on one mailbox: own modseqs, no lost update, no gap a reader could skip`, async () => {
    const { store } = t();
    const { user, inbox, archive } = await newMailbox(store);
    const counter = await store.items.create(email(user.id, inbox.id, { subject: 'counter', categories: ['count:0'], isRead: true }), NOW);
    const start = await highestModseq(store, user.id);
    const commits = recordCommits(store);
    const owned: Owned[][] = Array.from({ length: WRITERS }, () => []);
    let increments = 0;

    /** One writer: creates, updates, moves and deletes its own items, and increments the shared counter. */
    const writer = async (w: number): Promise<number[]> => {
      const mine = owned[w]!;
      const seen: number[] = [];
      for (let i = 0; i < MUTATIONS; i++) {
        const now = NOW + i;
        const target = mine.filter((x) => !x.deleted).at(-1);
        const op = target ? (i + w) % 5 : 0;
        let item: Item | undefined;
        if (op === 0 || !target) {
          item = await store.items.create(email(user.id, inbox.id, { receivedAt: NOW + w * 1000 + i, subject: `w${w} c${i}` }), now);
          mine.push({ id: item.id, folderId: inbox.id, isRead: false, isFlagged: false, deleted: false });
        } else if (op === 1) {
          item = await store.items.update(user.id, target.id, { isRead: !target.isRead }, now);
          target.isRead = !target.isRead;
        } else if (op === 2) {
          const to = target.folderId === inbox.id ? archive.id : inbox.id;
          item = await store.items.move(user.id, target.id, to, now);
          target.folderId = to;
        } else if (op === 3) {
          // Read the count, write it plus one: two writers that read the same count would lose an increment.
          item = await store.run(function* (tx) {
            const current = yield* tx.items.byId(user.id, counter.id);
            const n = Number(current!.categories[0]!.slice('count:'.length));
            return yield* tx.items.update(user.id, counter.id, { categories: [`count:${n + 1}`] }, now);
          });
          increments++;
        } else {
          // Decide on what was read: flag the item, or delete it when it already is.
          item = await store.run(function* (tx) {
            const current = yield* tx.items.byId(user.id, target.id);
            if (!current) throw new Error(`writer ${w} lost its item ${target.id}`);
            if (!current.isFlagged) return yield* tx.items.update(user.id, target.id, { isFlagged: true }, now);
            yield* tx.items.delete(user.id, target.id, now);
            return undefined;
          });
          if (item) target.isFlagged = true;
          else target.deleted = true;
        }
        if (item) seen.push(item.modseq);
      }
      return seen;
    };

    // The reader: follows both folders' history with a cursor each, as incremental sync does.
    const read = new Set<string>();
    const cursors = new Map([
      [inbox.id, start],
      [archive.id, start],
    ]);
    const key = (folderId: string, c: { modseq: number; objectId: string; kind: string }) => `${folderId} ${c.modseq} ${c.objectId} ${c.kind}`;
    let polls = 0;
    const poll = async () => {
      for (const folderId of [inbox.id, archive.id]) {
        for (;;) {
          const page = await store.sync.changes(user.id, folderId, cursors.get(folderId)!, LOWEST, PAGE);
          for (const c of page) read.add(key(folderId, c));
          if (page.length > 0) cursors.set(folderId, page[page.length - 1]!.modseq);
          if (page.length < PAGE) break;
        }
      }
      polls++;
    };
    let writing = true;
    const reader = (async () => {
      while (writing) {
        await poll();
        await new Promise((resolve) => setImmediate(resolve));
      }
      await poll(); // once more after the last commit
    })();

    let perWriter: number[][];
    try {
      perWriter = await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    } finally {
      writing = false;
      await reader;
      commits.stop();
    }
    const end = await highestModseq(store, user.id);

    // Each writer's changes took rising modseqs: a change never takes a modseq below one already committed.
    for (const seen of perWriter) for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
    // Every change was one commit with a modseq of its own; together they are exactly (start, end].
    const committed = commits.of(user.id).map((c) => c.modseq);
    expect(committed).toHaveLength(WRITERS * MUTATIONS);
    expect([...committed].sort((a, b) => a - b)).toEqual(Array.from({ length: end - start }, (_, i) => start + 1 + i));
    expect(new Set(perWriter.flat()).size).toBe(perWriter.flat().length);

    // No lost update: the counter counts every increment; every item is where and as its writer left it.
    expect(increments).toBeGreaterThan(WRITERS * 5);
    expect((await store.items.byId(user.id, counter.id))!.categories).toEqual([`count:${increments}`]);
    const model = owned.flat();
    const state = (x: { id: string; folderId: string; isRead: boolean; isFlagged: boolean }) => ({ id: x.id, folderId: x.folderId, isRead: x.isRead, isFlagged: x.isFlagged });
    const stored = await store.items.byIds(user.id, model.map((x) => x.id));
    expect(sorted(stored.map(state), (x) => x.id)).toEqual(sorted(model.filter((x) => !x.deleted).map(state), (x) => x.id));
    // The folder counters agree with the folders' contents.
    for (const folder of [inbox, archive]) {
      const contents = await store.sync.range(user.id, folder.id, LOWEST, HIGHEST, 'asc', 10_000);
      const expected = model.filter((x) => !x.deleted && x.folderId === folder.id).length + (folder.id === inbox.id ? 1 : 0);
      expect(contents).toHaveLength(expected);
      expect(await store.folders.byId(user.id, folder.id)).toMatchObject({ totalCount: expected, unreadCount: contents.filter((i) => !i.isRead).length });
    }

    // The reader missed nothing: every change in the final history was in a page it read.
    expect(polls).toBeGreaterThan(1);
    for (const folder of [inbox, archive]) {
      const history = await store.sync.changes(user.id, folder.id, start, LOWEST, 100_000);
      expect(history.length).toBeGreaterThan(0);
      expect(history.filter((c) => !read.has(key(folder.id, c)))).toEqual([]);
    }
  });
});
