/**
 * The store contract, mailbox views (issue 19), the same on every backend: a mailbox's settings document under
 * compare-and-set, automatic replies (one per sender per period, pending ones oldest first, finished only from
 * pending, purged by age), shared mailboxes and their members (tenant data: a member is a user of the mailbox's
 * tenant), and what raw SQL can do that no store method does: delete a user (cascades) and store view settings the
 * store would not write (read leniently).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SharedMailboxMember, Store } from '../../../server/store/types';
import { openSqliteStore } from '../../../server/store/sqlite';
import { openPostgresStore } from '../../../server/store/postgres';
import { freshDatabase, withClient } from '../../helpers/postgres';
import { STORE_BACKENDS } from '../../helpers/storeBackends';
import { DAY, NOW, description, eachBackend, expectRefusal, newMailbox, newTenant, newUser, unique } from './fixtures';

const member = (mailboxId: string, memberId: string, fields: Partial<SharedMailboxMember> = {}): SharedMailboxMember => ({
  mailboxId,
  memberId,
  fullAccess: true,
  sendAs: false,
  sendOnBehalf: false,
  createdAt: NOW,
  updatedAt: NOW,
  ...fields,
});

eachBackend('mailbox settings', (t) => {
  test('put is a compare-and-set on the version: 0 creates version 1, each change +1, a stale version changes nothing', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const other = await newMailbox(store);
    expect(await store.mailboxSettings.get(user.id)).toBeUndefined();

    const doc1 = '{"automaticReplies":{"status":"disabled"}, "kept": "as written"}';
    const first = await store.mailboxSettings.put(user.id, doc1, 0, NOW);
    expect(first).toEqual({ userId: user.id, version: 1, doc: doc1, updatedAt: NOW });
    expect(await store.mailboxSettings.get(user.id)).toEqual(first);
    // A second "first" document lost the race: nothing changes.
    expect(await store.mailboxSettings.put(user.id, '{"second":true}', 0, NOW + 1)).toBeUndefined();

    const second = await store.mailboxSettings.put(user.id, '{"v":2}', 1, NOW + 2);
    expect(second).toEqual({ userId: user.id, version: 2, doc: '{"v":2}', updatedAt: NOW + 2 });
    expect(await store.mailboxSettings.put(user.id, '{"stale":true}', 1, NOW + 3)).toBeUndefined();
    expect(await store.mailboxSettings.put(user.id, '{"ahead":true}', 3, NOW + 3)).toBeUndefined();
    expect(await store.mailboxSettings.get(user.id)).toEqual(second);

    // Mailboxes are separate: another's first document is version 1, and a version of one is no version of another.
    expect(await store.mailboxSettings.put(other.user.id, '{"v":2}', 2, NOW)).toBeUndefined();
    expect(await store.mailboxSettings.put(other.user.id, '{}', 0, NOW)).toMatchObject({ userId: other.user.id, version: 1 });
    expect(await store.mailboxSettings.get(user.id)).toEqual(second);
  });

  test('of two changes from one version made at once, exactly one wins', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    await store.mailboxSettings.put(user.id, '{"v":1}', 0, NOW);
    const results = await Promise.all(['{"a":1}', '{"b":1}', '{"c":1}'].map((doc) => store.mailboxSettings.put(user.id, doc, 1, NOW + 1)));
    const winners = results.filter((r) => r !== undefined);
    expect(winners).toHaveLength(1);
    expect(await store.mailboxSettings.get(user.id)).toEqual(winners[0]);
    expect(winners[0]).toMatchObject({ version: 2 });
  });

  test('in a unit of work: read and put in one transaction', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const put = (doc: string) =>
      store.run(function* (tx) {
        const current = yield* tx.mailboxSettings.get(user.id);
        return yield* tx.mailboxSettings.put(user.id, doc, current?.version ?? 0, NOW);
      });
    expect(await put('{"one":1}')).toMatchObject({ version: 1, doc: '{"one":1}' });
    expect(await put('{"two":2}')).toMatchObject({ version: 2, doc: '{"two":2}' });
  });
});

eachBackend('automatic replies', (t) => {
  const claim = (store: Store, userId: string, period: string, sender: string, now = NOW, id = unique('reply')) =>
    store.autoReplies.claim({ id, userId, period, sender, itemId: `item-${sender}` }, now);

  test('one claim per sender per period: the first wins, a repeat (in any case) changes nothing', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const other = await newMailbox(store);
    const period = unique('period');
    expect(await claim(store, user.id, period, 'Ann@Example.TEST', NOW)).toBe(true);
    expect(await claim(store, user.id, period, 'ann@example.test', NOW + 1)).toBe(false);
    expect(await claim(store, user.id, period, 'ANN@EXAMPLE.TEST', NOW + 2)).toBe(false);
    // Another sender, another period, another mailbox: each its own claim.
    expect(await claim(store, user.id, period, 'bob@example.test', NOW + 3)).toBe(true);
    const next = unique('period');
    expect(await claim(store, user.id, next, 'ann@example.test', NOW + 4)).toBe(true);
    expect(await claim(store, other.user.id, period, 'ann@example.test', NOW + 5)).toBe(true);

    const records = await store.autoReplies.ofPeriod(user.id, period);
    expect(records).toEqual([
      { id: expect.any(String), userId: user.id, period, sender: 'ann@example.test', itemId: 'item-Ann@Example.TEST', state: 'pending', createdAt: NOW, updatedAt: NOW },
      { id: expect.any(String), userId: user.id, period, sender: 'bob@example.test', itemId: 'item-bob@example.test', state: 'pending', createdAt: NOW + 3, updatedAt: NOW + 3 },
    ]);
    expect((await store.autoReplies.ofPeriod(user.id, next)).map((r) => r.sender)).toEqual(['ann@example.test']);
    expect(await store.autoReplies.ofPeriod(user.id, unique('period'))).toEqual([]);
  });

  test('claims made at once for one sender: exactly one wins', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const period = unique('period');
    const results = await Promise.all([0, 1, 2, 3].map((i) => claim(store, user.id, period, 'race@example.test', NOW + i)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.autoReplies.ofPeriod(user.id, period)).toHaveLength(1);
  });

  test('a repeated record id is refused (only the one-per-sender rule is absorbed)', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const id = unique('reply');
    const period = unique('period');
    expect(await claim(store, user.id, period, 'one@example.test', NOW, id)).toBe(true);
    await expectRefusal(claim(store, user.id, period, 'two@example.test', NOW, id));
    expect((await store.autoReplies.ofPeriod(user.id, period)).map((r) => r.sender)).toEqual(['one@example.test']);
  });

  test('pending answers pending replies of every mailbox oldest first (ties by id), up to the limit; finish only from pending', async () => {
    const { store } = t();
    const a = await newMailbox(store);
    const b = await newMailbox(store);
    const period = unique('period');
    // Long before every other test's claims, so they come first.
    const T = NOW - 1000 * DAY;
    const ids = { late: unique('r3'), tieB: `${unique('tie')}-b`, tieA: '', early: unique('r0') };
    ids.tieA = ids.tieB.replace(/-b$/, '-a');
    await claim(store, a.user.id, period, 'late@example.test', T + 3, ids.late);
    await claim(store, b.user.id, period, 'tie-b@example.test', T + 2, ids.tieB);
    await claim(store, a.user.id, period, 'tie-a@example.test', T + 2, ids.tieA);
    await claim(store, b.user.id, period, 'early@example.test', T + 1, ids.early);

    expect((await store.autoReplies.pending(3)).map((r) => r.id)).toEqual([ids.early, ids.tieA, ids.tieB]);
    expect(await store.autoReplies.finish(ids.early, 'sent', T + 10)).toBe(true);
    expect(await store.autoReplies.finish(ids.early, 'skipped', T + 11)).toBe(false);
    expect(await store.autoReplies.finish(ids.tieA, 'skipped', T + 12)).toBe(true);
    expect(await store.autoReplies.finish('no-such-reply', 'sent', T + 12)).toBe(false);
    expect((await store.autoReplies.pending(2)).map((r) => r.id)).toEqual([ids.tieB, ids.late]);
    expect(await store.autoReplies.ofPeriod(b.user.id, period)).toEqual([
      expect.objectContaining({ id: ids.early, state: 'sent', createdAt: T + 1, updatedAt: T + 10 }),
      expect.objectContaining({ id: ids.tieB, state: 'pending', updatedAt: T + 2 }),
    ]);
    expect(await store.autoReplies.ofPeriod(a.user.id, period)).toEqual([
      expect.objectContaining({ id: ids.tieA, state: 'skipped', updatedAt: T + 12 }),
      expect.objectContaining({ id: ids.late, state: 'pending' }),
    ]);
  });

  test('purge deletes finished records updated before the time, never pending ones; a purged sender may be claimed again', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    const period = unique('period');
    const T = NOW - 2000 * DAY; // before every other test's records
    const sent = unique('sent');
    const skipped = unique('skipped');
    const recent = unique('recent');
    const waiting = unique('waiting');
    await claim(store, user.id, period, 'sent@example.test', T, sent);
    await claim(store, user.id, period, 'skipped@example.test', T, skipped);
    await claim(store, user.id, period, 'recent@example.test', T, recent);
    await claim(store, user.id, period, 'waiting@example.test', T, waiting);
    await store.autoReplies.finish(sent, 'sent', T + 1);
    await store.autoReplies.finish(skipped, 'skipped', T + 2);
    await store.autoReplies.finish(recent, 'sent', T + 5);

    expect(await store.autoReplies.purge(T + 1)).toBe(0); // strictly before
    expect(await store.autoReplies.purge(T + 3)).toBe(2);
    expect((await store.autoReplies.ofPeriod(user.id, period)).map((r) => r.id).sort()).toEqual([recent, waiting].sort());
    expect(await store.autoReplies.purge(T + 3)).toBe(0);
    expect(await claim(store, user.id, period, 'sent@example.test', T + 6)).toBe(true);
    expect(await claim(store, user.id, period, 'waiting@example.test', T + 6)).toBe(false);
  });
});

eachBackend('shared mailboxes', (t) => {
  test('create marks an existing user shared and answers it with the user row; again answers it unchanged', async () => {
    const { store } = t();
    const { user } = await newMailbox(store);
    expect(await store.sharedMailboxes.get(user.id)).toBeUndefined();
    const shared = await store.sharedMailboxes.create(user.id, NOW + 5);
    expect(shared).toEqual({ user: await store.users.byId(user.id), createdAt: NOW + 5 });
    expect(await store.sharedMailboxes.get(user.id)).toEqual(shared);
    expect(await store.sharedMailboxes.create(user.id, NOW + 9)).toEqual(shared);
    await expectRefusal(store.sharedMailboxes.create('no-such-user', NOW));
    expect(await store.sharedMailboxes.get('no-such-user')).toBeUndefined();
  });

  test('list answers the tenant\'s shared mailboxes by address, equal addresses by id, and no other tenant\'s', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const other = await newTenant(store);
    const tag = unique('m');
    const make = async (tenantId: string, email: string) => {
      const { user } = await newMailbox(store, { tenantId, email });
      return store.sharedMailboxes.create(user.id, NOW);
    };
    const sales = await make(tenant.id, `sales-${tag}@example.test`);
    const help1 = await make(tenant.id, `help-${tag}@example.test`);
    const help2 = await make(tenant.id, `help-${tag}@example.test`);
    await make(other.id, `aaa-${tag}@example.test`);
    await newMailbox(store, { tenantId: tenant.id, email: `alice-${tag}@example.test` }); // a user, not shared
    const helps = [help1, help2].sort((x, y) => (x.user.id < y.user.id ? -1 : 1));
    expect(await store.sharedMailboxes.list(tenant.id)).toEqual([...helps, sales]);
    expect(await store.sharedMailboxes.list(unique('no-tenant'))).toEqual([]);
  });

  test('putMember inserts or replaces a membership (keeping when it was first written); member, members, removeMember', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const mailbox = (await newMailbox(store, { tenantId: tenant.id })).user;
    await store.sharedMailboxes.create(mailbox.id, NOW);
    const ann = await newUser(store, { tenantId: tenant.id });
    const bob = await newUser(store, { tenantId: tenant.id });

    await store.sharedMailboxes.putMember(member(mailbox.id, bob.id, { createdAt: NOW + 2, updatedAt: NOW + 2 }));
    await store.sharedMailboxes.putMember(member(mailbox.id, ann.id, { sendAs: true, createdAt: NOW + 1, updatedAt: NOW + 1 }));
    expect(await store.sharedMailboxes.member(mailbox.id, ann.id)).toEqual(member(mailbox.id, ann.id, { sendAs: true, createdAt: NOW + 1, updatedAt: NOW + 1 }));
    expect((await store.sharedMailboxes.members(mailbox.id)).map((m) => m.memberId)).toEqual([ann.id, bob.id]);

    const replaced = member(mailbox.id, ann.id, { fullAccess: false, sendAs: false, sendOnBehalf: true, createdAt: NOW + 7, updatedAt: NOW + 7 });
    await store.sharedMailboxes.putMember(replaced);
    expect(await store.sharedMailboxes.member(mailbox.id, ann.id)).toEqual({ ...replaced, createdAt: NOW + 1 });
    expect(await store.sharedMailboxes.members(mailbox.id)).toHaveLength(2);

    expect(await store.sharedMailboxes.removeMember(mailbox.id, ann.id)).toBe(true);
    expect(await store.sharedMailboxes.removeMember(mailbox.id, ann.id)).toBe(false);
    expect(await store.sharedMailboxes.member(mailbox.id, ann.id)).toBeUndefined();
    expect((await store.sharedMailboxes.members(mailbox.id)).map((m) => m.memberId)).toEqual([bob.id]);
    expect(await store.sharedMailboxes.members(unique('no-mailbox'))).toEqual([]);
  });

  test('putMember refuses a mailbox that is not shared and a member who is no user of its tenant, writing nothing', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const mailbox = (await newMailbox(store, { tenantId: tenant.id })).user;
    const notShared = (await newMailbox(store, { tenantId: tenant.id })).user;
    await store.sharedMailboxes.create(mailbox.id, NOW);
    const colleague = await newUser(store, { tenantId: tenant.id });
    const outsider = await newUser(store);
    await expectRefusal(store.sharedMailboxes.putMember(member(notShared.id, colleague.id)));
    await expectRefusal(store.sharedMailboxes.putMember(member(mailbox.id, outsider.id)));
    await expectRefusal(store.sharedMailboxes.putMember(member(mailbox.id, 'no-such-user')));
    expect(await store.sharedMailboxes.members(mailbox.id)).toEqual([]);
    expect(await store.sharedMailboxes.members(notShared.id)).toEqual([]);
    expect(await store.sharedMailboxes.ofMember(outsider.id)).toEqual([]);
  });

  test('ofMember answers the member\'s shared mailboxes by address, with the member\'s rights in each', async () => {
    const { store } = t();
    const tenant = await newTenant(store);
    const tag = unique('o');
    const zed = (await newMailbox(store, { tenantId: tenant.id, email: `zed-${tag}@example.test` })).user;
    const abe = (await newMailbox(store, { tenantId: tenant.id, email: `abe-${tag}@example.test` })).user;
    const unrelated = (await newMailbox(store, { tenantId: tenant.id, email: `mid-${tag}@example.test` })).user;
    const sharedZed = await store.sharedMailboxes.create(zed.id, NOW + 1);
    const sharedAbe = await store.sharedMailboxes.create(abe.id, NOW + 2);
    await store.sharedMailboxes.create(unrelated.id, NOW + 3);
    const me = await newUser(store, { tenantId: tenant.id });
    const someoneElse = await newUser(store, { tenantId: tenant.id });
    const inZed = member(zed.id, me.id, { sendOnBehalf: true, createdAt: NOW + 4, updatedAt: NOW + 5 });
    const inAbe = member(abe.id, me.id, { fullAccess: false, sendAs: true, createdAt: NOW + 6, updatedAt: NOW + 6 });
    await store.sharedMailboxes.putMember(inZed);
    await store.sharedMailboxes.putMember({ ...inZed, createdAt: NOW + 5 }); // a replace: the first time stays
    await store.sharedMailboxes.putMember(inAbe);
    await store.sharedMailboxes.putMember(member(unrelated.id, someoneElse.id));
    expect(await store.sharedMailboxes.ofMember(me.id)).toEqual([
      { mailbox: sharedAbe, rights: inAbe },
      { mailbox: sharedZed, rights: inZed },
    ]);
    await store.sharedMailboxes.removeMember(abe.id, me.id);
    expect(await store.sharedMailboxes.ofMember(me.id)).toEqual([{ mailbox: sharedZed, rights: inZed }]);
    expect(await store.sharedMailboxes.ofMember(unique('nobody'))).toEqual([]);
  });
});

/** A store of each backend with a raw connection beside it, to write as no store method does. */
async function rawStore(backend: (typeof STORE_BACKENDS)[number]) {
  if (backend === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pigeon-mailbox-views-raw-'));
    const store = openSqliteStore(path.join(dir, 'pigeon.db'));
    return {
      store: store as Store,
      exec: async (sqlite: string, _postgres: string, params: unknown[]) => void store.db.prepare(sqlite).run(...params),
      close: async () => {
        await store.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const database = await freshDatabase('pigeon_mailbox_views_raw');
  const store = await openPostgresStore(database.url);
  return {
    store: store as Store,
    exec: (_sqlite: string, postgres: string, params: unknown[]) => withClient(database.url, async (c) => void (await c.query(postgres, params))),
    close: async () => {
      await store.close();
      await database.drop();
    },
  };
}

describe.each(STORE_BACKENDS)('%s store: mailbox views under raw writes', (backend) => {
  let raw: Awaited<ReturnType<typeof rawStore>>;
  beforeAll(async () => {
    raw = await rawStore(backend);
  });
  afterAll(() => raw?.close());

  test('view settings are read leniently: a member missing or not a boolean reads as its default', async () => {
    const { store } = raw;
    const user = await newUser(store);
    const device = await store.devices.create(user.id, 'lenient', description(), NOW);
    const stored = async (json: string) => {
      await raw.exec('UPDATE devices SET view_settings = ? WHERE id = ?', 'UPDATE devices SET view_settings = $1::jsonb WHERE id = $2', [json, device.id]);
      return (await store.devices.byId(device.id))!.viewSettings;
    };
    expect(await stored('{"threaded":true}')).toEqual({ focusedInbox: true, threaded: true });
    expect(await stored('{"focusedInbox":false}')).toEqual({ focusedInbox: false, threaded: false });
    expect(await stored('{"focusedInbox":"no","threaded":1,"other":true}')).toEqual({ focusedInbox: true, threaded: false });
    expect(await stored('[]')).toEqual({ focusedInbox: true, threaded: false });
    expect(await stored('{}')).toEqual({ focusedInbox: true, threaded: false });

    // The soft reset compares with the settings as they read: the defaults again are no change…
    expect(await store.devices.setViewSettings(device.id, { focusedInbox: true, threaded: false }, NOW + 1)).toMatchObject({ epoch: 0, resetReason: null, updatedAt: NOW });
    expect(await stored('{"threaded":true}')).toEqual({ focusedInbox: true, threaded: true });
    expect(await store.devices.setViewSettings(device.id, { focusedInbox: true, threaded: true }, NOW + 2)).toMatchObject({ epoch: 0, resetReason: null });
    // …and a member that reads as its default, changed, is one.
    expect(await stored('{"focusedInbox":"no"}')).toEqual({ focusedInbox: true, threaded: false });
    expect(await store.devices.setViewSettings(device.id, { focusedInbox: false, threaded: false }, NOW + 3)).toMatchObject({ epoch: 1, resetReason: 'viewChanged', updatedAt: NOW + 3 });
  });

  test('deleting a user removes its shared mailbox and its memberships, as mailbox and as member', async () => {
    const { store } = raw;
    const tenant = await newTenant(store);
    const mailbox = await newUser(store, { tenantId: tenant.id });
    const other = await newUser(store, { tenantId: tenant.id });
    const leaving = await newUser(store, { tenantId: tenant.id });
    const staying = await newUser(store, { tenantId: tenant.id });
    await store.sharedMailboxes.create(mailbox.id, NOW);
    await store.sharedMailboxes.create(other.id, NOW);
    await store.sharedMailboxes.putMember(member(mailbox.id, leaving.id));
    await store.sharedMailboxes.putMember(member(mailbox.id, staying.id));
    await store.sharedMailboxes.putMember(member(other.id, leaving.id));
    const deleteUser = (id: string) => raw.exec('DELETE FROM users WHERE id = ?', 'DELETE FROM users WHERE id = $1', [id]);

    await deleteUser(leaving.id);
    expect((await store.sharedMailboxes.members(mailbox.id)).map((m) => m.memberId)).toEqual([staying.id]);
    expect(await store.sharedMailboxes.members(other.id)).toEqual([]);

    await deleteUser(mailbox.id);
    expect(await store.sharedMailboxes.get(mailbox.id)).toBeUndefined();
    expect(await store.sharedMailboxes.member(mailbox.id, staying.id)).toBeUndefined();
    expect(await store.sharedMailboxes.ofMember(staying.id)).toEqual([]);
    expect((await store.sharedMailboxes.list(tenant.id)).map((s) => s.user.id)).toEqual([other.id]);
  });

  // SQLite only: PostgreSQL's mailbox data references no user row (schema/postgres/README.md, data locality), so
  // there the settings and replies of a deleted user stay, as its mailbox does.
  if (backend === 'sqlite') test('deleting a user removes its settings document and automatic replies', async () => {
    const { store } = raw;
    const user = await newUser(store);
    const keeper = await newUser(store);
    const period = unique('period');
    await store.mailboxSettings.put(user.id, '{}', 0, NOW);
    await store.mailboxSettings.put(keeper.id, '{}', 0, NOW);
    await store.autoReplies.claim({ id: unique('r'), userId: user.id, period, sender: 'x@example.test', itemId: 'i' }, NOW);
    await store.autoReplies.claim({ id: unique('r'), userId: keeper.id, period, sender: 'x@example.test', itemId: 'i' }, NOW);
    await raw.exec('DELETE FROM users WHERE id = ?', '', [user.id]);
    expect(await store.mailboxSettings.get(user.id)).toBeUndefined();
    expect(await store.autoReplies.ofPeriod(user.id, period)).toEqual([]);
    expect(await store.mailboxSettings.get(keeper.id)).toMatchObject({ version: 1 });
    expect(await store.autoReplies.ofPeriod(keeper.id, period)).toHaveLength(1);
  });
});
