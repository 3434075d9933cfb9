/**
 * The convergence invariant (protocol.md §5) for calendar and contacts folders, as a property: after any history of
 * events and contacts created, edited as a whole (items.replace: new subject, times, recurrence, attendees, photo),
 * flagged, categorised and deleted — alone or several in one transaction — interleaved with syncs at random page
 * sizes (some responses lost), a device that syncs to `moreAvailable:false` holds exactly what a brand-new device's
 * initial sync holds: the same ids and every field. These folders have no window, so that is every item.
 *
 * Moves are not in the history: a mailbox has one calendar and one contacts folder (folders.create makes mail
 * folders only) and the mail service keeps events and contacts out of mail folders, so there is nowhere to move
 * one to. The history tries it (`misfile`) and checks the refusal changes nothing.
 *
 * Runs: see `runsOn`. Each backend's runs share one store, each run a fresh user in it.
 */
import fc from 'fast-check';
import { SyncWorld, Replica, WorldStore, contactContent, eventContent } from '../helpers/syncWorld';
import { STORE_BACKENDS } from '../helpers/storeBackends';
import type { Item, ItemContent } from '../../server/store/types';
import { itemPatchView, itemView } from '../../server/views';

/**
 * Runs per backend: CONVERGENCE_RUNS when set; else 100 on SQLite and 25 on PostgreSQL (the same engine over the
 * backend's own SQL, at about four times the cost of a run), so the file stays within half a minute.
 */
const DEFAULT_RUNS = { sqlite: 100, postgres: 25 } as const;
const runsOn = (backend: keyof typeof DEFAULT_RUNS) => (process.env.CONVERGENCE_RUNS ? Number(process.env.CONVERGENCE_RUNS) : DEFAULT_RUNS[backend]);

type Kind = 'event' | 'contact';
/** `photo`: 0 keeps the contact's photo, 1 removes it, n > 1 makes it photo n (few, so contacts share the bytes). */
type Op =
  | { t: 'create'; kind: Kind; variant: number; day: number; photo: number }
  | { t: 'replace'; kind: Kind; item: number; variant: number; day: number; photo: number; keepTime: boolean }
  | { t: 'flag' | 'unflag' | 'categorize' | 'delete' | 'misfile'; kind: Kind; item: number }
  | { t: 'burst'; kind: Kind; item: number; variant: number; day: number }
  | { t: 'sync'; kind: Kind; pages: number; maxChanges: number; lose: boolean }
  | { t: 'otherDeviceSync'; kind: Kind };

const kind = fc.constantFrom<Kind>('event', 'contact');
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('create' as const), kind, variant: fc.nat(999), day: fc.integer({ min: -30, max: 60 }), photo: fc.nat(4) }) },
  {
    weight: 6,
    arbitrary: fc.record({ t: fc.constant('replace' as const), kind, item: fc.nat(40), variant: fc.nat(999), day: fc.integer({ min: -30, max: 60 }), photo: fc.nat(4), keepTime: fc.boolean() }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constantFrom('flag' as const, 'unflag' as const, 'categorize' as const), kind, item: fc.nat(40) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('delete' as const), kind, item: fc.nat(40) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('misfile' as const), kind, item: fc.nat(40) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('burst' as const), kind, item: fc.nat(40), variant: fc.nat(999), day: fc.integer({ min: -30, max: 60 }) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('sync' as const), kind, pages: fc.integer({ min: 1, max: 3 }), maxChanges: fc.integer({ min: 1, max: 8 }), lose: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('otherDeviceSync' as const), kind }) },
);

const photoBytes = (n: number) => Buffer.from(`\x89PNG photo ${n}`);

async function run(stores: WorldStore, initial: number, ops: Op[], finalMaxChanges: number) {
  const w = await SyncWorld.open({ on: stores });
  try {
    const inbox = await w.folder('inbox');
    const folderOf = { event: (await w.folder('calendar')).id, contact: (await w.folder('contacts')).id };
    const deviceA = await w.device('device-a-0000000000');
    const deviceB = await w.device('device-b-0000000000');
    const a = { event: new Replica(w, folderOf.event, deviceA), contact: new Replica(w, folderOf.contact, deviceA) };
    const b = { event: new Replica(w, folderOf.event, deviceB), contact: new Replica(w, folderOf.contact, deviceB) };
    const base = w.clock.now();
    let uids = 0;

    /** New content for an item of `kind`: the uid kept (an edit never changes it), all else from `variant`. */
    const content = (k: Kind, uid: string, variant: number, day: number, photo: number): ItemContent =>
      k === 'event'
        ? eventContent(uid, variant, base + day * 86_400_000 + (variant % 24) * 3_600_000)
        : contactContent(uid, variant, base + variant * 1000, photo === 0 ? undefined : photo === 1 ? null : photoBytes(photo));
    const create = (k: Kind, variant: number, day: number, photo: number) =>
      w.newCalendarItem(k, folderOf[k], content(k, `uid-${++uids}@example.test`, variant, day, photo));
    const pick = async (k: Kind, n: number) => {
      const ids = await w.folderItemIds(folderOf[k]);
      return ids.length ? (await w.store.items.byId(w.user.id, ids[n % ids.length]!))! : undefined;
    };

    for (let i = 0; i < initial; i++) await w.store.items.create(create(i % 2 === 0 ? 'event' : 'contact', i * 37, i - 5, i % 5), w.clock.now());

    for (const o of ops) {
      w.clock.advance(1000);
      switch (o.t) {
        case 'create':
          await w.store.items.create(create(o.kind, o.variant, o.day, o.photo), w.clock.now());
          break;
        case 'replace': {
          const item = await pick(o.kind, o.item);
          if (!item) break;
          const next = content(o.kind, item.data.uid as string, o.variant, o.day, o.photo);
          // Most edits keep the item where it sorts (a new location, attendees, photo): those arrive as `updated`;
          // a new start moves it in the folder's order, and arrives as `created` (store, items.replace).
          if (o.keepTime) next.receivedAt = item.receivedAt;
          await w.store.items.replace(w.user.id, item.id, next, w.clock.now());
          break;
        }
        case 'flag':
        case 'unflag':
        case 'categorize': {
          const item = await pick(o.kind, o.item);
          const patch = o.t === 'categorize' ? { categories: [`c${o.item % 3}`] } : { isFlagged: o.t === 'flag' };
          if (item) await w.mail.update(w.user.id, item.id, patch);
          break;
        }
        case 'delete': {
          // Events and contacts are deleted for good (no Deleted Items): a `deleted` tombstone in their folder.
          const item = await pick(o.kind, o.item);
          if (item) expect(await w.mail.delete(w.user.id, item.id, false)).toEqual({ deleted: 'permanently' });
          break;
        }
        case 'misfile': {
          const item = await pick(o.kind, o.item);
          if (!item) break;
          await expect(w.mail.move(w.user.id, item.id, inbox.id)).rejects.toMatchObject({ status: 400, code: 'invalidRequest' });
          expect(await w.store.items.byId(w.user.id, item.id)).toEqual(item);
          break;
        }
        case 'burst': {
          // Several changes in one transaction: an item created and edited twice within it, another one edited.
          const fresh = create(o.kind, o.variant, o.day, 2);
          const other = await pick(o.kind, o.item);
          const now = w.clock.now();
          const edit = content(o.kind, 'burst@example.test', o.variant + 1, o.day + 1, 3);
          await w.store.run(function* (tx) {
            const x = yield* tx.items.create(fresh, now);
            yield* tx.items.replace(w.user.id, x.id, { ...edit, data: { ...edit.data, uid: x.data.uid } }, now);
            yield* tx.items.update(w.user.id, x.id, { isFlagged: true }, now);
            if (other) yield* tx.items.replace(w.user.id, other.id, content(o.kind, other.data.uid as string, o.variant + 2, o.day - 1, 1), now);
          });
          break;
        }
        case 'sync':
          for (let i = 0; i < o.pages; i++) {
            const page = await a[o.kind].step({ maxChanges: o.maxChanges, lose: o.lose && i === 0 });
            if (!page.moreAvailable) break;
          }
          break;
        case 'otherDeviceSync':
          await b[o.kind].syncToEnd(5);
          break;
      }
    }

    // Counters are maintained by every change; edits move no count.
    for (const folderId of Object.values(folderOf)) {
      const folder = (await w.store.folders.byId(w.user.id, folderId))!;
      expect({ total: folder.totalCount, unread: folder.unreadCount }).toEqual(await w.recount(folderId));
    }

    for (const replica of [a.event, a.contact, b.event, b.contact]) {
      const last = await replica.syncToEnd(finalMaxChanges);
      const fresh = new Replica(w, replica.folderId, await w.device('device-new-000000000'));
      await fresh.syncToEnd(finalMaxChanges);
      // No window: the whole folder, whatever the page sizes were.
      const folder = (await w.store.folders.byId(w.user.id, replica.folderId))!;
      expect(last.window).toEqual({ size: folder.totalCount, max: null, itemsInFolder: folder.totalCount, hasOlder: false });
      const expected = sorted(await w.expectedWindow(replica.folderId, folder.totalCount));
      expect(expected).toHaveLength(folder.totalCount);
      expect(sorted(fresh.items)).toEqual(expected);
      expect(sorted(replica.items)).toEqual(expected);
      // And a no-change poll from here returns nothing.
      const again = await replica.step({ maxChanges: finalMaxChanges });
      expect([again.created, again.updated, again.removed, again.moreAvailable]).toEqual([[], [], [], false]);
      await w.store.devices.delete(fresh.device.id);
    }
  } finally {
    await w.close();
  }
}

const sorted = (m: Map<string, unknown>) => [...m.entries()].sort(([x], [y]) => (x < y ? -1 : 1));

/** Fixed cases: held items edited (an `updated` entry must carry the new content), one edited in a burst, and more. */
const REGRESSIONS: Array<[number, Op[], number]> = [
  [
    2,
    [
      { t: 'sync', kind: 'event', pages: 3, maxChanges: 8, lose: false },
      { t: 'sync', kind: 'contact', pages: 3, maxChanges: 8, lose: false },
      { t: 'replace', kind: 'event', item: 0, variant: 3, day: 2, photo: 0, keepTime: true },
      { t: 'replace', kind: 'contact', item: 0, variant: 4, day: 0, photo: 2, keepTime: true },
      { t: 'replace', kind: 'event', item: 1, variant: 5, day: 1, photo: 0, keepTime: false },
    ],
    1,
  ],
  [1, [{ t: 'sync', kind: 'event', pages: 1, maxChanges: 8, lose: false }, { t: 'burst', kind: 'event', item: 0, variant: 12, day: 1 }], 3],
  // Found by the property: a contact the device had not received yet (its first sync paging down, one item a page)
  // edited to a sort key above the device's bound was sent as `updated`, for an item the device did not hold. (Of
  // the 2 initial contacts the device holds the newer; the older one moves above it.)
  [
    4,
    [
      { t: 'sync', kind: 'contact', pages: 2, maxChanges: 1, lose: true },
      { t: 'replace', kind: 'contact', item: 1, variant: 200, day: 0, photo: 0, keepTime: false },
      { t: 'replace', kind: 'event', item: 0, variant: 211, day: 0, photo: 0, keepTime: false },
    ],
    1,
  ],
  // Found by the property: a held event edited to a start below the device's bound (its first sync still paging
  // down, one item a page) and then deleted: the tombstone, logged at the new key, never reached the device, which
  // kept the event. (The newest of the 5 initial events, Jan 4, moves to Dec 12, the oldest, and goes.)
  [
    9,
    [
      { t: 'sync', kind: 'event', pages: 1, maxChanges: 1, lose: false },
      { t: 'replace', kind: 'event', item: 0, variant: 5, day: -20, photo: 0, keepTime: false },
      { t: 'delete', kind: 'event', item: 4 },
    ],
    1,
  ],
];

describe.each(STORE_BACKENDS)('%s', (backend) => {
  const runs = runsOn(backend);
  /** The property's own bound: a raised CONVERGENCE_RUNS (and a busy machine) needs more than jest's 5 s. */
  const timeoutMs = Math.max(120_000, runs * 2_000);
  let stores: WorldStore;
  beforeAll(async () => {
    stores = await WorldStore.open(backend);
  });
  afterAll(() => stores?.close());

  test(`calendar and contacts convergence: a synced replica equals a brand-new device's initial sync (${runs} runs)`, async () => {
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(fc.nat(12), fc.array(op, { minLength: 1, maxLength: 40 }), fc.integer({ min: 1, max: 10 }), (initial, ops, finalMaxChanges) =>
        run(stores, initial, ops, finalMaxChanges),
      ),
      { numRuns: runs },
    );
    console.log(`calendar convergence on ${backend}: ${runs} runs in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, timeoutMs);

  test.each(REGRESSIONS.map((r, i) => [i, ...r] as const))('regression %i', async (_i, initial, ops, finalMaxChanges) => {
    await run(stores, initial, ops as Op[], finalMaxChanges);
  }, timeoutMs);
});

/** The views convergence compares: what an event's and a contact's carry, and what an `updated` entry of one carries. */
describe('event and contact views', () => {
  const item = (type: Item['type'], fields: Partial<Item> = {}): Item => ({
    id: 'i1', userId: 'u1', folderId: 'f1', type, receivedAt: Date.UTC(2026, 0, 5, 9), modseq: 7, changeKey: '7', isRead: true,
    isFlagged: false, importance: 'normal', categories: [], inferenceClassification: 'focused', subject: 'S', from: null, to: [],
    cc: [], replyTo: [], sentAt: null, preview: '', hasAttachments: false, bodySize: 0, conversationId: null, internetMessageId: null,
    mimeBlobId: null, attachments: [], placedModseq: 3, data: {}, createdAt: 0, ...fields,
  });

  test('an event carries its EventData fields; a seeded one without them reads with defaults', () => {
    const { data, subject } = eventContent('uid-1@example.test', 3, Date.UTC(2026, 0, 5, 9));
    const view = itemView(item('event', { subject, data }));
    expect(view).toMatchObject({ ...Object.fromEntries(['uid', 'start', 'end', 'timeZone', 'location', 'organizer', 'attendees', 'isAllDay', 'isCancelled', 'recurrence', 'exceptions', 'reminderMinutesBeforeStart', 'showAs', 'responseStatus'].map((k) => [k, data[k]])), subject });
    expect(data.recurrence).not.toBeNull(); // variant 3 recurs: the check above covered a real recurrence
    expect(itemView(item('event', { data: { start: '2026-01-05T09:00:00Z', end: '2026-01-05T10:00:00Z' } }))).toMatchObject({
      uid: null, recurrence: null, exceptions: [], reminderMinutesBeforeStart: null, showAs: 'busy', responseStatus: 'organizer', attendees: [], isAllDay: false,
    });
  });

  test('a contact carries its ContactData fields and its photo\'s attachment id (null without one)', () => {
    const { data, subject } = contactContent('uid-2@example.test', 1, 0);
    const photo = { id: 'att2', name: 'contact-photo', contentType: 'image/png', size: 10, isInline: false, contentId: null };
    const other = { ...photo, id: 'att1', name: 'card.vcf' };
    const view = itemView(item('contact', { subject, data, attachments: [other, photo] }));
    expect(view).toMatchObject({ ...data, displayName: subject, photo: 'att2' });
    expect(itemView(item('contact', { attachments: [other] }))).toMatchObject({ uid: null, department: null, addresses: [], birthday: null, photo: null });
  });

  test('an `updated` entry of an event or a contact is its whole view; of mail, the properties an app changes', () => {
    const event = item('event', { data: eventContent('u', 4, 0).data });
    expect(itemPatchView(event)).toEqual(itemView(event));
    const contact = item('contact', { data: contactContent('u', 4, 0).data });
    expect(itemPatchView(contact)).toEqual(itemView(contact));
    expect(itemPatchView(item('email', { isFlagged: true, categories: ['x'] }))).toEqual({ id: 'i1', isFlagged: true, categories: ['x'], changeKey: '7', isRead: true, inferenceClassification: 'focused' });
  });
});
